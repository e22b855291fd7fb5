"""Hierarchical attention against a direct construction of the tree partition, and its invariant."""
import math

import pytest
import torch
from conftest import assert_exact_rows, draw_starts, spread_row
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.analysis.hierarchical import by_level, level_maps
from explorer.mechanisms import REGISTRY

MECH = REGISTRY["hierarchical"]


def qkv(n, heads=2, d=8, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q, doc.k, doc.v


def spans(n, starts):
    return list(zip(starts, list(starts[1:]) + [n]))


def ref_levels(n, chunk_starts, branching):
    """Spans at level 1 .. the document, built with plain lists."""
    levels = [list(chunk_starts)]
    while len(levels[-1]) > 1:
        levels.append(levels[-1][::branching] if branching else [0])
    return [spans(n, s) for s in levels]


def containing(level, i):
    return next((a, b) for a, b in level if a <= i < b)


def reference(q, k, v, chunk_starts, branching=0, pool=True, causal=False):
    """Weights [heads, n, n] and output: own chunk's tokens plus the siblings of every ancestor."""
    heads, n, d = q.shape
    q, k, v = q.double(), k.double(), v.double()
    levels = ref_levels(n, chunk_starts, branching)
    w = torch.zeros(heads, n, n, dtype=torch.float64)
    for i in range(n):
        a, b = containing(levels[0], i)
        keys = [j for j in range(a, b) if not causal or j <= i]
        logits = [(q[:, i] * k[:, j]).sum(-1) / math.sqrt(d) for j in keys]
        nodes = []
        for fine, coarse in zip(levels, levels[1:]):
            own, parent = containing(fine, i), containing(coarse, i)
            qv = q[:, own[0] : (i + 1 if causal else own[1])].mean(1) if pool else q[:, i]
            for s, e in fine:
                if parent[0] <= s and e <= parent[1] and (s, e) != own and (not causal or e <= own[0]):
                    nodes.append((s, e))
                    logits.append((qv * k[:, s:e].mean(1)).sum(-1) / math.sqrt(d) + math.log(e - s))
        spread_row(w, i, logits, keys, nodes)
    return w, w @ v


CASES = [
    dict(chunk_length=4, branching=0, pool_queries=True, causal=False),
    dict(chunk_length=4, branching=2, pool_queries=True, causal=False),
    dict(chunk_length=3, branching=3, pool_queries=False, causal=False),
    dict(chunk_length=4, branching=2, pool_queries=True, causal=True),
    dict(chunk_length=5, branching=0, pool_queries=True, causal=True),
    dict(boundaries=[0, 1, 6, 7, 15], branching=2, pool_queries=True, causal=False),
    dict(boundaries=[0, 1, 6, 7, 15], branching=2, pool_queries=True, causal=True),
]


@pytest.mark.parametrize("params", CASES)
def test_against_direct_construction(params):
    n = 21
    q, k, v = qkv(n, seed=7)
    res = MECH.run(q, k, v, **params)
    chunks = params.get("boundaries") or list(range(0, n, params["chunk_length"]))
    w, out = reference(q, k, v, chunks, params["branching"], params["pool_queries"], params["causal"])
    torch.testing.assert_close(res.weights(torch.arange(n)).double(), w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.output.double(), out, atol=1e-5, rtol=1e-5)


def test_two_levels_with_own_queries_is_segmented_with_summaries():
    q, k, v = qkv(37, seed=2)
    hier = MECH.run(q, k, v, chunk_length=6, branching=0, pool_queries=False)
    seg = REGISTRY["segmented"].run(q, k, v, segment_length=6, summaries=True)
    torch.testing.assert_close(hier.output, seg.output, atol=1e-6, rtol=1e-5)


def test_one_chunk_is_dense():
    q, k, v = qkv(20)
    res = MECH.run(q, k, v, chunk_length=50, branching=2)
    assert [lv.starts.tolist() for lv in res.structure.levels] == [[0]]
    torch.testing.assert_close(res.output, explorer.attention_stats(q, k, v).output, atol=1e-5, rtol=1e-5)


def test_reach_partitions_the_keys():
    """Every key is reached exactly through one node: all keys, or exactly the past under causal."""
    n = 29
    q, k, v = qkv(n)
    rows = torch.arange(n)
    assert bool(MECH.run(q, k, v, chunk_length=3, branching=2).reach(rows).all())
    causal = MECH.run(q, k, v, chunk_length=3, branching=2, causal=True).reach(rows)
    assert torch.equal(causal[0], torch.ones(n, n, dtype=torch.bool).tril())


def test_structure_and_levels():
    n = 50
    q, k, v = qkv(n)
    res = MECH.run(q, k, v, chunk_length=8, branching=3)
    levels = res.structure.levels
    assert [lv.starts.tolist() for lv in levels] == [[0, 8, 16, 24, 32, 40, 48], [0, 24, 48], [0]]
    assert levels[0].parent.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert levels[1].ends.tolist() == [24, 48, 50] and levels[-1].parent.tolist() == [-1]
    parts = by_level(q, k, v, chunk_length=8, branching=3)(torch.arange(n))
    torch.testing.assert_close(parts.sum(1), res.weights(torch.arange(n)), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.structure.level_mass, parts.sum(-1), atol=1e-5, rtol=0)
    assert res.structure.level_mass.shape == (2, 3, n)
    assert 0 < res.cost["flops"] < res.cost["dense_flops"]


def test_deterministic():
    q, k, v = qkv(33, seed=4)
    a = MECH.run(q, k, v, chunk_length=4, branching=2, causal=True)
    b = MECH.run(q, k, v, chunk_length=4, branching=2, causal=True)
    assert torch.equal(a.output, b.output)


@pytest.mark.parametrize("params, match", [
    ({"chunk_length": 0}, "chunk_length=0"),
    ({"chunk_length": "8"}, "chunk_length"),
    ({"branching": 1}, "branching=1"),
    ({"branching": -2}, "branching=-2"),
    ({"pool_queries": 3}, "pool_queries"),
    ({"causal": "no"}, "causal"),
    ({"boundaries": [2, 5]}, "boundaries"),
    ({"boundaries": [0, 5, 3]}, "boundaries"),
    ({"boundaries": [0, 99]}, "boundaries"),
    ({"levels": 3}, "unknown"),
])
def test_bad_params(params, match):
    q, k, v = qkv(12)
    for run in (MECH.run, by_level):
        with pytest.raises(ValueError, match=match):
            run(q, k, v, **params)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), length=st.integers(1, 50), branching=st.sampled_from([0, 2, 3, 7]),
       pool=st.booleans(), causal=st.booleans(), explicit=st.booleans(), data=st.data())
def test_invariant(n, length, branching, pool, causal, explicit, data):
    q, k, v = qkv(n, seed=n)
    params = dict(chunk_length=length, branching=branching, pool_queries=pool, causal=causal)
    if explicit:
        params["boundaries"] = draw_starts(data, n)
    assert_exact_rows(MECH.run(q, k, v, **params), v, causal)


def test_level_maps_add_up_to_the_pooled_weights():
    from explorer.core.pooling import pooled_map

    n = 45
    q, k, v = qkv(n, heads=1)
    params = dict(chunk_length=4, branching=2)
    res = MECH.run(q, k, v, **params)
    parts = res.structure.level_mass.shape[1]
    maps = level_maps(by_level(q, k, v, **params), parts, 1, n, rows=(3, 40), cols=(0, 30), grid=8)
    whole = pooled_map(res.weights, 1, n, rows=(3, 40), cols=(0, 30), grid=8)
    assert len(maps) == parts
    torch.testing.assert_close(sum(m.mean for m in maps), whole.mean, atol=1e-6, rtol=1e-5)
    assert maps[0].row_edges == whole.row_edges
    with pytest.raises(ValueError, match="window"):
        level_maps(by_level(q, k, v, **params), parts, 1, n, rows=(0, n + 1), cols=(0, n))
