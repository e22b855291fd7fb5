"""Fidelity metrics: zero error for dense itself, exact values for a hand-made result."""
import pytest
import torch

import explorer
from explorer.analysis.fidelity import fidelity
from explorer.core import attention
from explorer.core.rows import sample_rows
from explorer.mechanisms import REGISTRY, Result


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


def test_every_metric_equals_its_definition_computed_row_by_row():
    """An arbitrary signed, unnormalised result (zeros included) against the definitions in NumPy."""
    import numpy as np

    n, d, k = 37, 8, 5
    doc = explorer.synthetic(n, heads=2, head_dim=d, seed=11)
    gen = torch.Generator().manual_seed(5)
    w_all = torch.randn(2, n, n, generator=gen) * (torch.rand(2, n, n, generator=gen) > 0.4)
    out = torch.randn(2, n, d, generator=gen)
    res = Result(out, lambda rows: w_all[:, rows])
    f = fidelity(doc.q, doc.k, doc.v, res, topk=k, chunk=6)
    q, key, v = (x.double().numpy() for x in (doc.q, doc.k, doc.v))
    for h in range(2):
        for i in range(n):
            logits = np.array([q[h, i] @ key[h, j] / np.sqrt(d) for j in range(n)])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            w = w_all[h, i].double().numpy()
            exact = p @ v[h]
            top_p = set(np.argsort(-p)[:k])
            top_w = set(np.argsort(-w)[:k])
            a = np.abs(w) / np.abs(w).sum()
            entropy_w = -sum(x * np.log(x) for x in a if x > 0)
            entropy_p = -sum(x * np.log(x) for x in p)
            expected = {"rel_error": np.linalg.norm(out[h, i].double().numpy() - exact) / np.linalg.norm(exact),
                        "tv": 0.5 * np.abs(w - p).sum(), "recall": len(top_p & top_w) / k,
                        "reach_mass": p[w != 0].sum(), "entropy_delta": entropy_w - entropy_p}
            for metric, value in expected.items():
                assert float(getattr(f, metric)[h, i]) == pytest.approx(value, rel=1e-4, abs=1e-5), (metric, h, i)
