"""Recurrent memory: Transformer-XL segments with an optional compressive memory.

The text is cut into segments of `segment` tokens. The queries of segment s
attend to (Transformer-XL) the segment itself (all of it, or up to the query
when causal) and a memory of the previous `memory` tokens' keys and values;
with `compressed > 0` also (Compressive Transformer) to up to `compressed`
older slots, each the mean of `ratio` consecutive tokens' keys and values.

Compression follows the paper's FIFO: whenever a segment is processed the
tokens pushed out of the memory (one evicted block) are cut into groups of
`ratio` from the block's start (the last group of a block may be shorter) and
mean-pooled into slots; only the newest `compressed` slots are kept. A slot's
weight is spread uniformly over the tokens it averages, so the effective
weights over the original tokens reproduce the output exactly.

Deviation from the papers: the cache here is the given layer's own k and v
of earlier tokens, not hidden states of the previous segment recomputed
through the stack, and no extra relative position encoding is added (q and k
carry whatever positions the model gave them). So this shows the *reach* of
the recurrence on one layer, not a retrained Transformer-XL.

Parameters larger than n are clamped: segment > n is one segment.

Without compressed slots every segment sees one contiguous window (memory and
itself), so all segments run as one batched SDPA (explorer.core.windows);
`segment_loop`, one softmax per segment, is the reference and the path with slots.

structure: MemoryStructure (the spans every segment reaches, and the parameters used).

dense_mass_by_region() splits dense attention by where its keys lie relative
to this reach (REGIONS), for the page's "beyond reach" chart.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core.windows import segment_attention
from explorer.mechanisms.base import Mechanism, Param, Result, Structure


@dataclass
class MemoryLayout:
    """The spans every segment reaches, [start, end) token pairs (S segments)."""

    segments: torch.Tensor  # LongTensor [S, 2] every segment
    memory: torch.Tensor  # LongTensor [S, 2] its uncompressed memory (empty when start == end)
    compressed: torch.Tensor  # LongTensor [S, 2] the tokens its compressed slots summarize
    slot_spans: torch.Tensor  # LongTensor [n_slots, 2] tokens each compressed slot averages (all slots ever made)
    segment_slots: torch.Tensor  # LongTensor [S, 2] range [first, last) into slot_spans of the slots it sees
    reach_start: torch.Tensor  # LongTensor [n] earliest token each query can reach (query - it = how far back)


@dataclass
class MemoryStructure(MemoryLayout, Structure):
    """The layout of a run and the parameters it used (after clamping)."""

    segment: int
    memory_len: int
    compressed_len: int
    ratio: int
    causal: bool


def memory_starts(n: int, segment: int, memory: int) -> list[int]:
    """First uncompressed memory token of each segment: max(0, s * L - M)."""
    return [max(0, s - memory) for s in range(0, n, segment)]


def slot_spans(n: int, segment: int, memory: int, ratio: int) -> torch.Tensor:
    """All compressed slots, oldest first: each evicted block cut into groups of `ratio`.

    Segment s evicts the tokens [b_{s-1}, b_s) that left the memory since the
    previous segment; the slots tile [0, b_last) in order.
    """
    spans = []
    prev = 0
    for b in memory_starts(n, segment, memory):
        spans += [(a, min(a + ratio, b)) for a in range(prev, b, ratio)]
        prev = b
    return torch.tensor(spans, dtype=torch.long).reshape(-1, 2)


def segment_layout(n: int, segment: int, memory: int, compressed: int, ratio: int) -> MemoryLayout:
    """The spans every segment reaches: segments, memory, compressed slots."""
    starts = torch.arange(0, n, segment)
    ends = (starts + segment).clamp_max(n)
    mem_start = torch.tensor(memory_starts(n, segment, memory), dtype=torch.long)
    slots = slot_spans(n, segment, memory, ratio) if compressed else torch.zeros(0, 2, dtype=torch.long)
    # slots tile [0, b) in order, so the ones a segment sees end at or before its b
    last = torch.searchsorted(slots[:, 1].contiguous(), mem_start, right=True)
    first = (last - compressed).clamp_min(0)
    comp_start = mem_start
    if len(slots):
        comp_start = torch.where(last > first, slots[first.clamp_max(len(slots) - 1), 0], mem_start)
    seg_of = torch.arange(n) // segment
    return MemoryLayout(
        segments=torch.stack([starts, ends], 1),
        memory=torch.stack([mem_start, starts], 1),
        compressed=torch.stack([comp_start, mem_start], 1),
        slot_spans=slots,
        segment_slots=torch.stack([first, last], 1),
        reach_start=comp_start[seg_of])


def slot_means(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """[heads, n_slots, dim]: mean of x over each slot's tokens (exact sums, no cumsum drift)."""
    if not len(slots):
        return x.new_zeros(x.shape[0], 0, x.shape[2])
    lengths = slots[:, 1] - slots[:, 0]
    owner = torch.repeat_interleave(torch.arange(len(slots), device=x.device), lengths)
    total = x.new_zeros(x.shape[0], len(slots), x.shape[2]).index_add_(1, owner, x[:, : int(slots[-1, 1])])
    return total / lengths[None, :, None].to(x)


def segment_loop(q, k, v, lay: MemoryLayout, slot_k, slot_v, causal: bool) -> torch.Tensor:
    """The reference output: each segment's softmax over its slots, memory and itself, one at a time."""
    heads, n, d = q.shape
    out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
    for (a, e), (b, _), (first, last) in zip(lay.segments.tolist(), lay.memory.tolist(),
                                             lay.segment_slots.tolist()):
        keys = torch.cat([slot_k[:, first:last], k[:, b:e]], 1)
        vals = torch.cat([slot_v[:, first:last], v[:, b:e]], 1)
        sc = torch.matmul(q[:, a:e], keys.transpose(1, 2)) * d**-0.5
        if causal:
            pos = torch.arange(b, e, device=q.device)
            future = pos[None, :] > torch.arange(a, e, device=q.device)[:, None]
            sc[:, :, last - first:] = sc[:, :, last - first:].masked_fill(future, float("-inf"))
        out[:, a:e] = torch.softmax(sc, -1) @ vals
    return out


class Memory(Mechanism):
    key = "memory"
    title = "Recurrent memory (Transformer-XL)"
    summary = (
        "The text is read in segments. Each segment's queries attend to the segment itself and to "
        "a cached memory of the tokens just before it; with compressed slots, memories older than "
        "that are mean-pooled, a ratio of tokens per slot, into a compressed memory (Compressive "
        "Transformer), and a slot's weight is shared by the tokens it summarizes. Here the cache "
        "holds this layer's own keys and values of earlier tokens, not states recomputed by a "
        "stack of layers.")
    params = (
        Param("segment", 128, 1, 1_000_000, help="segment length L (clamped to n)",
              label="Segment length L (tokens)"),
        Param("memory", 128, 0, 1_000_000, help="cached previous tokens M each segment also attends to",
              label="Cached memory M (tokens)"),
        Param("compressed", 0, 0, 1_000_000, help="compressed memory slots (0 = no compressive memory)",
              label="Compressed slots (0: no compressive memory)"),
        Param("ratio", 4, 1, 4096, help="compression ratio c: tokens mean-pooled into one slot",
              label="Compression ratio (tokens per slot)"),
        Param("causal", False, help="mask keys after the query inside the segment",
              label="Causal mask inside the segment"),
    )

    def compute(self, q, k, v, segment, memory, compressed, ratio, causal):
        heads, n, d = q.shape
        segment = min(segment, n)
        lay = segment_layout(n, segment, memory, compressed, ratio)
        dev = MemoryLayout(**{name: t.to(q.device) for name, t in vars(lay).items()})
        slots = dev.slot_spans
        slot_k, slot_v = slot_means(k, slots), slot_means(v, slots)
        spans = zip(lay.segments.tolist(), lay.memory.tolist(), lay.segment_slots.tolist())
        reached = sum((e - a) * (last - first + e - b) for (a, e), (b, _), (first, last) in spans)
        fast = None if len(slots) else segment_attention(
            q, k, v, dev.segments[:, 0], dev.memory[:, 0], dev.segments[:, 1], causal)
        out = fast[0] if fast else segment_loop(q, k, v, lay, slot_k, slot_v, causal)

        def reach_fn(rows):
            seg = rows // segment
            stop = rows + 1 if causal else dev.segments[seg, 1]
            keys = torch.arange(n, device=q.device)
            mask = (keys[None, :] >= dev.reach_start[rows, None]) & (keys[None, :] < stop[:, None])
            return mask[None].expand(heads, -1, -1)

        def weights_fn(rows):
            seg = rows // segment
            keys = torch.arange(n, device=q.device)
            tok_sc = torch.matmul(q[:, rows], k.transpose(1, 2)) * d**-0.5
            stop = rows + 1 if causal else dev.segments[seg, 1]
            tok_ok = (keys[None, :] >= dev.memory[seg, 0, None]) & (keys[None, :] < stop[:, None])
            tok_sc = tok_sc.masked_fill(~tok_ok, float("-inf"))
            slot_sc = torch.matmul(q[:, rows], slot_k.transpose(1, 2)) * d**-0.5
            ids = torch.arange(len(slots), device=q.device)
            first, last = dev.segment_slots[seg].unbind(1)
            slot_ok = (ids[None, :] >= first[:, None]) & (ids[None, :] < last[:, None])
            slot_sc = slot_sc.masked_fill(~slot_ok, float("-inf"))
            p = torch.softmax(torch.cat([slot_sc, tok_sc], -1), -1)
            w_slot, w = p[..., : len(slots)], p[..., len(slots):].clone()
            if len(slots):
                lengths = slots[:, 1] - slots[:, 0]
                owner = torch.repeat_interleave(ids, lengths)
                covered = int(slots[-1, 1])
                w[..., :covered] += (w_slot / lengths.to(w))[..., owner]
            return w

        dv, pooled = v.shape[2], int(slots[-1, 1]) if len(slots) else 0
        cost = {"flops": 2 * heads * reached * (d + dv) + heads * pooled * (d + dv),  # scores, mixing, pooling sums
                "bytes": 4 * heads * (reached + n * (2 * d + 2 * dv) + len(slots) * (d + dv))}
        structure = MemoryStructure(**vars(lay), segment=segment, memory_len=memory, compressed_len=compressed,
                                    ratio=ratio, causal=causal)
        return Result(out, weights_fn, structure=structure, cost=cost, reach_fn=reach_fn)


MECHANISM = Memory()
