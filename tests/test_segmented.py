"""Segmented attention against brute-force references built here, and its invariant."""
import math

import pytest
import torch
from conftest import assert_exact_rows, draw_starts, spread_row
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.mechanisms import REGISTRY

MECH = REGISTRY["segmented"]


def qkv(n, heads=2, d=8, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q, doc.k, doc.v


def spans(n, starts):
    ends = list(starts[1:]) + [n]
    return list(zip(starts, ends))


def window_mask(n, starts, overlap, causal):
    """Explicit [n, n] mask: own segment plus `overlap` keys before it (and j <= i if causal)."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    for a, b in spans(n, starts):
        for i in range(a, b):
            for j in range(max(0, a - overlap), b):
                mask[i, j] = not causal or j <= i
    return mask


def reference(q, k, v, starts, overlap=0, causal=False, summaries=False, size_weighted=True):
    """Weights [heads, n, n] and output built query by query from the definition."""
    heads, n, d = q.shape
    mask = window_mask(n, starts, overlap, causal)
    segs = spans(n, starts)
    w = torch.zeros(heads, n, n, dtype=torch.float64)
    q, k, v = q.double(), k.double(), v.double()
    for i in range(n):
        own = next(s for s, (a, b) in enumerate(segs) if a <= i < b)
        keys = mask[i].nonzero().flatten().tolist()
        logits = [(q[:, i] * k[:, j]).sum(-1) / math.sqrt(d) for j in keys]
        nodes = []
        if summaries:
            for s, (a, b) in enumerate(segs):
                if s == own or (causal and b > segs[own][0]):
                    continue
                nodes.append((a, b))
                bias = math.log(b - a) if size_weighted else 0.0
                logits.append((q[:, i] * k[:, a:b].mean(1)).sum(-1) / math.sqrt(d) + bias)
        spread_row(w, i, logits, keys, nodes)
    return w, w @ v


@pytest.mark.parametrize("n, length, overlap, causal", [
    (23, 5, 0, False), (23, 5, 3, False), (23, 5, 3, True), (17, 4, 9, True), (9, 40, 0, False), (1, 3, 2, True),
])
def test_without_summaries_equals_masked_dense(n, length, overlap, causal):
    q, k, v = qkv(n)
    res = MECH.run(q, k, v, segment_length=length, overlap=overlap, causal=causal)
    mask = window_mask(n, list(range(0, n, length)), overlap, causal)
    s = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    dense_masked = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    rows = torch.arange(n)
    torch.testing.assert_close(res.weights(rows), dense_masked, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.output, dense_masked @ v, atol=1e-5, rtol=1e-5)
    assert torch.equal(res.reach(rows)[0], mask)


@pytest.mark.parametrize("starts, overlap, causal, size_weighted", [
    ([0, 3, 4, 11, 20], 0, False, True), ([0, 3, 4, 11, 20], 2, True, True),
    ([0, 7, 14], 1, False, False), ([0, 10, 12], 0, True, False),
])
def test_summaries_against_direct_construction(starts, overlap, causal, size_weighted):
    q, k, v = qkv(23, seed=3)
    res = MECH.run(q, k, v, boundaries=starts, overlap=overlap, causal=causal, summaries=True,
                   size_weighted=size_weighted)
    w, out = reference(q, k, v, starts, overlap, causal, summaries=True, size_weighted=size_weighted)
    torch.testing.assert_close(res.weights(torch.arange(23)).double(), w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.output.double(), out, atol=1e-5, rtol=1e-5)


def test_long_segment_is_dense():
    q, k, v = qkv(30)
    res = MECH.run(q, k, v, segment_length=1000)
    assert res.structure.starts.tolist() == [0]
    torch.testing.assert_close(res.output, explorer.attention_stats(q, k, v).output, atol=1e-5, rtol=1e-5)


def test_structure_and_cost():
    q, k, v = qkv(50)
    res = MECH.run(q, k, v, segment_length=16, summaries=True)
    st_ = res.structure
    assert st_.starts.tolist() == [0, 16, 32, 48]
    assert st_.sizes.tolist() == [16, 16, 16, 2] and st_.ends.tolist() == [16, 32, 48, 50]
    w = res.weights(torch.arange(50))
    # with overlap 0 summaries cover exactly the keys outside the own segment
    outside = w * ~window_mask(50, [0, 16, 32, 48], 0, False)
    torch.testing.assert_close(st_.summary_mass, outside.sum(-1), atol=1e-5, rtol=0)
    plain = MECH.run(q, k, v, segment_length=16)
    assert plain.structure.summary_mass.abs().max() == 0
    assert 0 < plain.cost["flops"] < res.cost["flops"] < res.cost["dense_flops"]
    assert res.cost["seconds"] >= 0 and res.cost["bytes"] > 0


def test_deterministic_and_on_input_device():
    q, k, v = qkv(40, seed=5)
    a = MECH.run(q, k, v, segment_length=7, overlap=2, summaries=True)
    b = MECH.run(q, k, v, segment_length=7, overlap=2, summaries=True)
    assert torch.equal(a.output, b.output)
    assert a.output.device == q.device


@pytest.mark.parametrize("params, match", [
    ({"segment_length": 0}, "segment_length=0"),
    ({"segment_length": 2.5}, "segment_length"),
    ({"segment_length": True}, "segment_length"),
    ({"overlap": -1}, "overlap=-1"),
    ({"summaries": "yes"}, "summaries"),
    ({"size_weighted": 2}, "size_weighted"),
    ({"causal": None}, "causal"),
    ({"boundaries": [1, 4]}, "boundaries"),
    ({"boundaries": [0, 4, 4]}, "boundaries"),
    ({"boundaries": [0, 12]}, "boundaries"),
    ({"boundaries": [0.0, 4.0]}, "boundaries"),
    ({"segments": 3}, "unknown"),
])
def test_bad_params(params, match):
    q, k, v = qkv(12)
    with pytest.raises(ValueError, match=match):
        MECH.run(q, k, v, **params)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), length=st.integers(1, 50), overlap=st.integers(0, 50), summaries=st.booleans(),
       size_weighted=st.booleans(), causal=st.booleans(), explicit=st.booleans(), data=st.data())
def test_invariant(n, length, overlap, summaries, size_weighted, causal, explicit, data):
    q, k, v = qkv(n, seed=n)
    params = dict(segment_length=length, overlap=overlap, summaries=summaries, size_weighted=size_weighted,
                  causal=causal)
    if explicit:
        params["boundaries"] = draw_starts(data, n)
    res = MECH.run(q, k, v, **params)
    w = assert_exact_rows(res, v, causal)
    assert bool(res.reach(torch.arange(n))[w > 0].all())


@pytest.mark.parametrize("overlap, causal", [(0, False), (4, True)])
def test_outside_mass_is_dense_mass_beyond_the_window(overlap, causal):
    from explorer.analysis.segmented import outside_mass

    n = 31
    q, k, v = qkv(n, seed=9)
    lse = explorer.attention_stats(q, k, v, causal=causal).lse
    got = outside_mass(q, k, lse, segment_length=6, overlap=overlap, causal=causal)
    dense = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1]) + torch.full((n, n), float("-inf")).triu(1)
                          if causal else (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1]), dim=-1)
    outside = (dense * ~window_mask(n, list(range(0, n, 6)), overlap, causal)).sum(-1)
    torch.testing.assert_close(got, outside, atol=1e-5, rtol=0)
