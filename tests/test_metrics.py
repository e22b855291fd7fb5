"""Fidelity metrics: zero error for dense itself, exact values for a hand-made result."""
import torch

import explorer
from explorer.core import attention
from explorer.mechanisms import REGISTRY, Result
from explorer.analysis.fidelity import fidelity
from explorer.core.rows import sample_rows


def test_dense_against_itself_is_perfect():
    d = explorer.synthetic(40, heads=2)
    f = fidelity(d.q, d.k, d.v, REGISTRY["dense"].run(d.q, d.k, d.v), chunk=7)
    assert f.rows.tolist() == list(range(40))
    assert float(f.tv.max()) < 1e-5 and float(f.rel_error.max()) < 1e-5
    assert float(f.recall.min()) == 1.0 and float(f.reach_mass.min()) > 0.99999


def test_local_window_result_matches_hand_computed_metrics():
    d = explorer.synthetic(30, heads=1, seed=3)
    n = 30
    keys = torch.arange(n)
    near = (keys[None, :] - keys[:, None]).abs() <= 2

    def weights(rows):
        s = attention.scores(d.q, d.k, rows).masked_fill(~near[rows][None], float("-inf"))
        return torch.softmax(s, -1)

    res = Result(weights(keys) @ d.v, weights)
    f = fidelity(d.q, d.k, d.v, res, topk=3)
    p = attention.weights(d.q, d.k, keys)
    torch.testing.assert_close(f.reach_mass[0], (p * near).sum(-1)[0])
    torch.testing.assert_close(f.tv[0], 0.5 * (p - weights(keys)).abs().sum(-1)[0])
    assert 0 < float(f.recall.mean()) < 1
    summary = f.summary()
    assert summary["tv"]["worst_decile"] >= summary["tv"]["median"]


def test_row_sample_is_even_and_includes_both_ends():
    rows = sample_rows(10_000, 100)
    assert rows[0] == 0 and rows[-1] == 9_999 and rows.numel() == 100
    assert sample_rows(50, 100).tolist() == list(range(50))
