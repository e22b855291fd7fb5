"""Remedies for dilution: the query factors, the closed forms of the reference setup against dense
attention on those logits, every mechanism on rescaled queries, the registry and its validation."""
import math

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis.remedies import (REMEDIES, check_remedy, label, last_query_scale, query_scale,
                                        reference_weight, remedy)
from explorer.core import attention
from explorer.mechanisms import REGISTRY

LENGTHS = [1, 2, 3, 10, 100, 1000, 20000]


def reference_logits(n: int):
    """q, k with head_dim 1 whose logits are +3 on key 0 and -2 on every other key, for every query."""
    q = torch.ones(1, n, 1, dtype=torch.float64)
    k = torch.full((1, n, 1), -2.0, dtype=torch.float64)
    k[0, 0, 0] = 3.0
    return q, k


def dense_top_weight(n: int, kind: str, params: dict) -> float:
    q, k = reference_logits(n)
    return float(attention.weights(remedy(q, kind, params), k, torch.tensor([n - 1]))[0, 0, 0])


def test_reference_without_remedy_is_one_over_one_plus_n_minus_one_e_minus_five():
    n = np.array(LENGTHS, dtype=float)
    want = 1 / (1 + (n - 1) * math.exp(-5))
    np.testing.assert_allclose(reference_weight(n), want, rtol=1e-12)
    np.testing.assert_allclose([dense_top_weight(x, "none", {}) for x in LENGTHS], want, rtol=1e-10)


@pytest.mark.parametrize("s", [0.2, 0.5, 1.0, 2.0])
def test_reference_with_ssmax_is_one_over_one_plus_n_minus_one_n_minus_five_s(s):
    n = np.array(LENGTHS, dtype=float)
    want = 1 / (1 + (n - 1) * n ** (-5 * s))
    np.testing.assert_allclose(reference_weight(n, ("ssmax", {"s": s})), want, rtol=1e-12)
    np.testing.assert_allclose([dense_top_weight(x, "ssmax", {"s": s}) for x in LENGTHS], want, rtol=1e-10)
    if s > 0.2:  # above s = 1/5 the +3 key's weight grows towards 1 with n (at s = 1/5 it tends to 1/2)
        assert reference_weight([10**6], ("ssmax", {"s": s}))[0] > reference_weight([10], ("ssmax", {"s": s}))[0]


def test_reference_with_llama4_tuning():
    params = {"attn_scale": 0.1, "floor_scale": 4}
    n = np.array(LENGTHS, dtype=float)
    c = 1 + 0.1 * np.log(np.floor(n / 4) + 1)  # the last query's position is n - 1
    want = 1 / (1 + (n - 1) * np.exp(-5 * c))
    np.testing.assert_allclose(reference_weight(n, ("llama4", params)), want, rtol=1e-12)
    np.testing.assert_allclose([dense_top_weight(x, "llama4", params) for x in LENGTHS], want, rtol=1e-10)
    np.testing.assert_allclose(reference_weight([100, 8191], ("llama4", {})), reference_weight([100, 8191]))


def test_query_factors_follow_the_formulas():
    i = np.arange(20)
    np.testing.assert_allclose(query_scale(20, "ssmax", {"s": 0.5}, causal=True), 0.5 * np.log(i + 1))
    np.testing.assert_allclose(query_scale(20, "ssmax", {"s": 0.5}), np.full(20, 0.5 * np.log(20)))
    np.testing.assert_allclose(query_scale(20, "none"), np.ones(20))
    tuned = query_scale(3 * 8192, "llama4")  # the transformers formula: 1 + attn_scale * log1p(floor((pos + 1) / 8192))
    assert (tuned[:8191] == 1).all() and float(tuned[8191]) == pytest.approx(1 + 0.1 * math.log(2))
    assert float(tuned[-1]) == pytest.approx(1 + 0.1 * math.log(4))
    assert torch.equal(query_scale(30000, "llama4", causal=True), query_scale(30000, "llama4"))  # positions only
    np.testing.assert_allclose(last_query_scale([5, 9000], ("ssmax", {"s": 2.0})), 2 * np.log([5, 9000]))


def test_remedy_scales_each_query_row_and_none_is_the_identity():
    d = explorer.synthetic(12, heads=2, head_dim=8)
    assert remedy(d.q) is d.q
    scaled = remedy(d.q, "ssmax", {"s": 1.5}, causal=True)
    torch.testing.assert_close(scaled, d.q * (1.5 * torch.log(torch.arange(1, 13.0)))[None, :, None])


@pytest.mark.parametrize("key", list(REGISTRY))
def test_every_mechanism_runs_on_rescaled_queries_and_keeps_its_invariant(key):
    d = explorer.synthetic(40, heads=2, head_dim=8, seed=3)
    q = remedy(d.q, "ssmax", {"s": 0.8})
    res = REGISTRY[key].run(q, d.k, d.v)
    rows = torch.arange(0, 40, 7)
    scale = res.output.abs().max().clamp_min(1.0)
    torch.testing.assert_close(res.weights(rows) @ d.v, res.output[:, rows], atol=1e-4 * scale, rtol=1e-4)
    if key == "dense":  # dense on rescaled queries is softmax of the rescaled logits
        logits = attention.scores(d.q, d.k, rows) * (0.8 * math.log(40))
        torch.testing.assert_close(res.weights(rows), torch.softmax(logits, -1), atol=1e-6, rtol=1e-5)


def test_registry_and_validation():
    assert list(REMEDIES) == ["none", "ssmax", "llama4"]
    for r in REMEDIES.values():
        assert r.title and r.summary and all(p.label and p.help for p in r.params)
        assert r.validate({}) == r.defaults()
    assert check_remedy(None) == ("none", {})
    assert check_remedy(("llama4", {"attn_scale": 0.2})) == ("llama4", {"attn_scale": 0.2, "floor_scale": 8192})
    assert label(("ssmax", {"s": 0.5})) == "Length-scaled softmax (SSMax) (s 0.5)"
    cases = [(("ssmax", {"t": 1}), "unknown parameter"), (("llama4", {"floor_scale": 0}), "floor_scale=0"),
             (("ssmax", {"s": float("nan")}), "s=nan"), (("cosine", {}), "remedy='cosine'"),
             (("ssmax",), "remedy must be given"), ("ssmax", "remedy must be given")]
    for spec, match in cases:
        with pytest.raises(ValueError, match=match):
            check_remedy(spec)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        reference_weight([0, 4])
