"""Sink + window (StreamingLLM): equal to dense under the explicit sink + window mask, memory linear in n;
the sink measure of Gu et al. against brute force."""
import itertools

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis.sinks import SinkMeasure, dense_key_scores, sink_measure, sink_measure_of
from explorer.core import attention
from explorer.bench import Peak
from explorer.mechanisms import REGISTRY

SINKS = REGISTRY["sinks"]


def explicit_mask(n: int, sinks: int, window: int, causal: bool) -> torch.Tensor:
    """[n, n] keys each query sees: the first `sinks` (not after it when causal) and its window."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    if causal:
        return ((j <= i) & (j > i - window)) | ((j < sinks) & (j <= i))
    return ((j - i).abs() < window) | (j < sinks)


def masked_dense(q, k, v, mask):
    s = (q.double() @ k.double().transpose(1, 2)) / q.shape[-1] ** 0.5
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
    return p, p @ v.double()


def test_registered_after_memory_before_routing_with_labelled_params():
    keys = list(REGISTRY)
    assert keys.index("memory") < keys.index("sinks") < keys.index("routing")
    assert SINKS.title == "Sink + window (StreamingLLM)"
    assert SINKS.defaults() == {"sinks": 4, "window": 256, "causal": True}
    assert all(p.label and p.help for p in SINKS.params)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n,sinks,window", [(1, 4, 256), (9, 4, 3), (40, 0, 5), (40, 3, 1), (70, 50, 8),
                                            (300, 4, 64), (300, 12, 400)])
def test_equals_dense_under_the_explicit_sink_and_window_mask(n, sinks, window, causal):
    d = explorer.synthetic(n, heads=2, head_dim=8, seed=n + sinks + window)
    res = SINKS.run(d.q, d.k, d.v, sinks=sinks, window=window, causal=causal)
    mask = explicit_mask(n, sinks, window, causal)
    p, out = masked_dense(d.q, d.k, d.v, mask)
    torch.testing.assert_close(res.output.double(), out, atol=1e-5, rtol=1e-5)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:11]
    torch.testing.assert_close(res.weights(rows).double(), p[:, rows], atol=1e-6, rtol=1e-5)
    assert torch.equal(res.reach(rows), mask[rows][None].expand(2, -1, -1))
    s = res.structure
    assert (s.sinks, s.window, s.causal) == (min(sinks, n), window, causal)
    torch.testing.assert_close(s.sink_mass.double(), p[..., : min(sinks, n)].sum(-1), atol=1e-6, rtol=1e-5)
    i = torch.arange(n)
    assert torch.equal(s.window_start, (i - window + 1).clamp_min(0))
    assert torch.equal(s.window_stop, i + 1 if causal else (i + window).clamp_max(n))
    assert res.cost["flops"] == 2 * 2 * int(mask.sum()) * 16  # the pairs it attends to, nothing more


def test_a_window_over_the_text_is_dense():
    d = explorer.synthetic(50, heads=1, head_dim=8, seed=2)
    for causal in (True, False):
        res = SINKS.run(d.q, d.k, d.v, sinks=0, window=50, causal=causal)
        dense = REGISTRY["dense"].run(d.q, d.k, d.v, causal=causal)
        torch.testing.assert_close(res.output, dense.output, atol=1e-5, rtol=1e-5)


def test_memory_grows_with_n_times_sinks_plus_window_not_n_squared():
    n = 32768  # an n x n float matrix would be 4 GiB
    d = explorer.synthetic(n, heads=1, head_dim=16, seed=0)
    with Peak(torch.device("cpu")) as peak:
        res = SINKS.run(d.q, d.k, d.v, sinks=4, window=256)
    assert peak.bytes < 256 * 2**20, peak.bytes
    assert res.weights([n - 1]).shape == (1, 1, n) and int(res.reach([n - 1]).sum()) == 4 + 256


# ---------------------------------------------------------------- the sink measure

def brute_scores(w: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """sum_i a_ik / |{i : i sees k}| from the full [heads, n, n] weights and [n, n] visibility."""
    count = seen.sum(0)
    return np.where(count > 0, w.sum(1) / np.maximum(count, 1), 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_key_scores_match_brute_force(causal):
    d = explorer.synthetic(45, heads=3, head_dim=8, seed=11)
    mask = explicit_mask(45, 0, 45, causal)
    p, _ = masked_dense(d.q, d.k, d.v, mask)
    want = brute_scores(p.numpy(), mask.numpy())
    np.testing.assert_allclose(dense_key_scores(d.q, d.k, causal).numpy(), want, rtol=1e-5, atol=1e-8)
    if causal:  # the last key is seen by the last query alone: its score is that query's weight on it
        np.testing.assert_allclose(want[:, -1], p[:, -1, -1].numpy(), rtol=1e-9)


def test_mechanism_key_scores_use_its_reach():
    d = explorer.synthetic(60, heads=2, head_dim=8, seed=4)
    res = SINKS.run(d.q, d.k, d.v, sinks=2, window=6)
    mask = explicit_mask(60, 2, 6, True)
    p, _ = masked_dense(d.q, d.k, d.v, mask)
    got = sink_measure_of(res, threshold=0.1, layer=3)
    np.testing.assert_allclose(got.scores[0], brute_scores(p.numpy(), mask.numpy()), rtol=1e-5, atol=1e-8)
    assert got.layers == [3] and got.threshold == 0.1
    dense = sink_measure_of(REGISTRY["dense"].run(d.q, d.k, d.v, causal=True))
    np.testing.assert_allclose(dense.scores, sink_measure(d.q, d.k, causal=True).scores, rtol=1e-5, atol=1e-8)


def test_share_of_heads_with_a_sink_on_the_first_token():
    """Head 0 puts 0.9 of every query on token 0 (a sink), head 1 attends uniformly (1/n on it)."""
    n = 20
    q = torch.zeros(2, n, 1)
    q[0] = 1.0
    k = torch.zeros(2, n, 1)
    k[0, 0] = np.log(0.9 * (n - 1) / 0.1)  # softmax weight 0.9 on token 0 for every query of head 0
    m = sink_measure(q, k, threshold=0.3)
    np.testing.assert_allclose(m.token_scores, [[0.9, 1 / n]], rtol=1e-5)
    assert m.sink_heads.tolist() == [[True, False]] and m.share == 0.5
    both = SinkMeasure.merge(m, sink_measure(q, k, layer=5))
    assert both.layers == [0, 5] and both.scores.shape == (2, 2, n) and both.share == 0.5
    frame = both.frame()
    assert len(frame) == 4 and frame["sink"].tolist() == [True, False, True, False]
    assert sink_measure(q, k, token=1).share == 0.0
    with pytest.raises(ValueError, match="different threshold"):
        SinkMeasure.merge(m, sink_measure(q, k, threshold=0.5))
    with pytest.raises(ValueError, match="token 20"):
        sink_measure(q, k, token=20)


@pytest.mark.parametrize("sinks,window", list(itertools.product([0, 4], [1, 300])))
def test_every_parameter_setting_keeps_weights_times_v_equal_to_the_output(sinks, window):
    d = explorer.synthetic(130, heads=2, head_dim=8, seed=sinks + window)
    for causal in (True, False):
        res = SINKS.run(d.q, d.k, d.v, sinks=sinks, window=window, causal=causal)
        rows = torch.arange(130)
        torch.testing.assert_close(res.weights(rows) @ d.v, res.output, atol=1e-5, rtol=1e-5)


def test_measured_on_sampled_queries_the_score_is_their_mean():
    """On a row sample each key's score is the mean over the sampled queries that see it."""
    d = explorer.synthetic(40, heads=2, head_dim=8, seed=4)
    rows = torch.tensor([0, 7, 13, 25, 39])
    for causal in (False, True):
        got = sink_measure(d.q, d.k, causal, rows=rows).scores[0]
        w = attention.weights(d.q, d.k, rows, causal).double()
        seen = (torch.arange(40)[None] <= rows[:, None]) if causal else torch.ones(5, 40, dtype=torch.bool)
        want = (w.sum(1) / seen.sum(0).clamp_min(1)).where(seen.any(0), torch.zeros(()))
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-9)
