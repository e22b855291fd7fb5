"""Recurrent memory against brute-force references: an explicit reach mask and a FIFO simulation."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.mechanisms import REGISTRY

MEM = REGISTRY["memory"]


def qkv(n, heads=2, d=8, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q, doc.k, doc.v


def reach_mask(n, segment, memory, causal):
    """Transformer-XL reach written out: own segment (up to the query if causal) plus M tokens before it."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        start = (i // segment) * segment
        end = i + 1 if causal else min(n, start + segment)
        mask[i, max(0, start - memory):end] = True
    return mask


def masked_dense(q, k, v, mask):
    s = (q @ k.transpose(1, 2)) * q.shape[-1] ** -0.5
    w = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
    return w, w @ v


def fifo_keys(n, segment, memory, compressed, ratio):
    """Simulate the Compressive Transformer FIFO segment by segment.

    Returns, per segment, its compressed slots (lists of token indices) and its memory tokens.
    """
    mem, comp, out = [], [], []
    for start in range(0, n, segment):
        overflow = max(0, len(mem) - memory)
        evicted, mem = mem[:overflow], mem[overflow:]
        comp += [evicted[i:i + ratio] for i in range(0, len(evicted), ratio)]
        comp = comp[-compressed:] if compressed else []
        out.append((list(comp), list(mem)))
        mem = mem + list(range(start, min(n, start + segment)))
    return out


def fifo_reference(q, k, v, segment, memory, compressed, ratio, causal):
    heads, n, d = q.shape
    w = torch.zeros(heads, n, n)
    for s, (comp, mem) in enumerate(fifo_keys(n, segment, memory, compressed, ratio)):
        seg = list(range(s * segment, min(n, (s + 1) * segment)))
        for i in seg:
            toks = mem + [j for j in seg if not causal or j <= i]
            keys = [k[:, c].mean(1) for c in comp] + [k[:, j] for j in toks]
            sc = torch.stack(keys, 1) @ q[:, i, :, None] * d**-0.5
            p = torch.softmax(sc[..., 0], -1)
            for c, slot in enumerate(comp):
                w[:, i, slot] += p[:, c, None] / len(slot)
            w[:, i, toks] += p[:, len(comp):]
    return w, w @ v


@pytest.mark.parametrize("n,segment,memory,causal", [(37, 8, 5, False), (37, 8, 5, True), (20, 30, 4, False),
                                                     (33, 1, 3, True), (16, 4, 0, False), (25, 6, 100, True)])
def test_against_reach_mask(n, segment, memory, causal):
    q, k, v = qkv(n)
    res = MEM.run(q, k, v, segment=segment, memory=memory, causal=causal)
    mask = reach_mask(n, min(segment, n), memory, causal)
    w, out = masked_dense(q, k, v, mask)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-5)
    assert torch.equal(res.reach(torch.arange(n)), mask[None].expand(2, -1, -1))


@pytest.mark.parametrize("n,segment,memory,compressed,ratio,causal", [
    (40, 6, 4, 3, 2, False), (40, 6, 4, 3, 2, True), (50, 5, 7, 100, 3, False),
    (31, 4, 0, 2, 4, True), (29, 7, 3, 5, 1, False), (23, 2, 5, 4, 3, True)])
def test_compressive_against_fifo(n, segment, memory, compressed, ratio, causal):
    q, k, v = qkv(n, seed=3)
    res = MEM.run(q, k, v, segment=segment, memory=memory, compressed=compressed, ratio=ratio, causal=causal)
    w, out = fifo_reference(q, k, v, segment, memory, compressed, ratio, causal)
    torch.testing.assert_close(res.output, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.weights(torch.arange(n)), w, atol=1e-6, rtol=1e-5)


def test_structure_matches_fifo():
    n, segment, memory, compressed, ratio = 45, 6, 4, 3, 2
    q, k, v = qkv(n)
    st_ = MEM.run(q, k, v, segment=segment, memory=memory, compressed=compressed, ratio=ratio).structure
    for s, (comp, mem) in enumerate(fifo_keys(n, segment, memory, compressed, ratio)):
        first, last = st_.segment_slots[s].tolist()
        spans = [list(range(a, b)) for a, b in st_.slot_spans[first:last].tolist()]
        assert spans == comp
        assert list(range(*st_.memory[s].tolist())) == mem
        assert st_.segments[s].tolist() == [s * segment, min(n, (s + 1) * segment)]
        reach = (comp[0][0] if comp else mem[0] if mem else s * segment)
        assert st_.compressed[s, 0] == reach
        assert (st_.reach_start[s * segment:(s + 1) * segment] == reach).all()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), segment=st.integers(1, 70), memory=st.integers(0, 70),
       compressed=st.integers(0, 20), ratio=st.integers(1, 9), causal=st.booleans(),
       seed=st.integers(0, 3))
def test_invariant(n, segment, memory, compressed, ratio, causal, seed):
    q, k, v = qkv(n, seed=seed)
    res = MEM.run(q, k, v, segment=segment, memory=memory, compressed=compressed, ratio=ratio, causal=causal)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, n // 2)]
    w = res.weights(rows)
    scale = res.output.abs().max()
    torch.testing.assert_close(w @ v, res.output[:, rows], atol=1e-5 * float(scale), rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, len(rows)))
    assert not (w.abs() > 0)[~res.reach(rows)].any()


def test_deterministic_and_cost():
    q, k, v = qkv(64)
    a = MEM.run(q, k, v, segment=16, memory=8, compressed=4, ratio=2)
    b = MEM.run(q, k, v, segment=16, memory=8, compressed=4, ratio=2)
    assert torch.equal(a.output, b.output)
    assert 0 < a.cost["flops"] < a.cost["dense_flops"]


@pytest.mark.parametrize("name,value", [("segment", 0), ("segment", 1.5), ("memory", -1), ("compressed", -2),
                                        ("ratio", 0), ("ratio", 5000), ("causal", "yes"), ("memory", True)])
def test_bad_params(name, value):
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        MEM.run(q, k, v, **{name: value})


def test_dense_mass_by_region_matches_masks():
    from explorer.analysis.memory import REGIONS, dense_mass_by_region

    n = 41
    q, k, v = qkv(n)
    for causal in (False, True):
        st_ = MEM.run(q, k, v, segment=6, memory=4, compressed=2, ratio=3, causal=causal).structure
        rows = torch.tensor([0, 5, 17, 40])
        mass = dense_mass_by_region(q, k, st_, rows)
        dense = torch.softmax((q @ k.transpose(1, 2)) * 8**-0.5, -1)[:, rows]
        total = sum(mass[r] for r in REGIONS)
        torch.testing.assert_close(total, torch.ones(2, 4))
        reach = MEM.run(q, k, v, segment=6, memory=4, compressed=2, ratio=3, causal=causal).reach(rows)
        inside = mass["compressed"] + mass["memory"] + mass["segment"]
        torch.testing.assert_close(inside, (dense * reach).sum(-1))
        for j, i in enumerate(rows.tolist()):
            seg = i // 6
            own = dense[:, j, seg * 6:(i + 1 if causal else min(n, seg * 6 + 6))]
            torch.testing.assert_close(mass["segment"][:, j], own.sum(-1))
