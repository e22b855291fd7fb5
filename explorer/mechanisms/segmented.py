"""Segmented (blockwise) attention, with optional per-segment summaries.

The sequence is cut into contiguous segments (explorer.core.segments). A query in
segment [a, b) attends to the keys [max(0, a - overlap), b): its own segment
plus the `overlap` keys just before it (a sliding look-back as in blockwise /
local attention; with overlap 0 the attention matrix is block-diagonal).
With `causal`, keys after the query are masked as well.

Inter-segment step (`summaries`): every query also attends to one summary per
OTHER segment - its mean-pooled key and mean-pooled value - inside the same
softmax (Combiner-style factorisation, Ren et al. 2021, with a uniform
within-segment distribution). A summary J scores q . mean(k_J) / sqrt(d), plus
log|J| when `size_weighted` (then the summary stands for |J| keys that all score
like its mean: the piecewise-constant block of H-Transformer-1D; without it, a
whole segment counts as one key). Because the summary's value is the mean of
its tokens' values, its softmax mass p_J is exactly p_J / |J| on each of its
tokens, which is what `weights` reports. Under `causal`, only segments that end
before the query's own segment begins are summarised. With overlap > 0 the
previous segment is reached both directly (its last `overlap` keys) and
through its summary; both add up in the weights.

Without summaries the segments run as one batched SDPA (SpanAttention.run with
the segment starts); the row-chunk loop is the reference and the path with summaries.

Segments come from `segment_length` (fixed length, the last one shorter, a
length over n gives one segment = dense) or from an explicit `boundaries`
list of segment start token indices (strictly increasing, first 0, all < n),
which the page computes with explorer.core.segments.by_structure from the Doc's
text and offsets (sentences, paragraphs); `boundaries` overrides
`segment_length`.

structure: SegmentedStructure (the segments, and the mass the summaries took).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core import segments
from explorer.mechanisms.base import Mechanism, Param, Result, Structure
from explorer.mechanisms.spans import NodeLevel, SpanAttention, make_starts, pooled_nodes, row_chunk, span_cost, windows


@dataclass
class SegmentedStructure(Structure):
    """The segments as cut (from a length or the text's boundaries) and what the summaries took."""

    starts: torch.Tensor  # LongTensor [segments] first token of each segment
    ends: torch.Tensor  # LongTensor [segments] one past its last token
    sizes: torch.Tensor  # LongTensor [segments] tokens in it
    overlap: int
    summaries: bool
    size_weighted: bool
    causal: bool
    summary_mass: torch.Tensor  # [heads, n] share of each query's attention on summaries (0 without them)


class Segmented(Mechanism):
    key = "segmented"
    title = "Segmented attention"
    summary = (
        "Each token attends only to the tokens of its own segment (fixed length, or the text's "
        "sentences or paragraphs), plus the look-back tokens before it; with summaries it also "
        "sees one mean-pooled key and value per other segment, whose weight is shared evenly by "
        "that segment's tokens. White lines and alternating shades mark the segments on every "
        "chart.")
    params = (
        Param("segment_length", 128, 1, None, help="tokens per segment (clamped to n); ignored with boundaries",
              label="Segment length (tokens)"),
        Param("overlap", 0, 0, None, help="extra keys before its segment's start that a query also sees",
              label="Look-back before the segment (tokens)"),
        Param("summaries", False, help="also attend to a mean-pooled summary (key, value) of every other segment",
              label="Summaries of the other segments"),
        Param("size_weighted", True, help="a summary scores as its segment's size of keys (adds log size)",
              label="A summary counts as its segment's size"),
        Param("causal", False, help="mask keys (and summaries of segments) after the query",
              label="Causal mask"),
        Param("boundaries", None, help="segment start token indices (sorted, first 0, < n); overrides segment_length"),
    )

    def compute(self, q, k, v, segment_length, overlap, summaries, size_weighted, causal, boundaries):
        heads, n, _ = q.shape
        starts = make_starts(n, segment_length, boundaries, q.device)
        seg = segments.ids(starts, n)
        seg_ends = segments.ends(starts, n)
        lo, hi = windows(starts, n, overlap)
        levels = [self._summaries(q, k, v, starts, seg, seg_ends, size_weighted, causal)] if summaries else []
        engine = SpanAttention(q, k, v, lo, hi, causal, levels)
        sizes = segments.sizes(starts, n)
        chunk = row_chunk(n, heads, int(sizes.max()) + overlap, starts.numel() if summaries else 0, q.device)
        out, mass = engine.run(chunk, starts)
        structure = SegmentedStructure(
            starts=starts.cpu(), ends=seg_ends.cpu(), sizes=sizes.cpu(), overlap=overlap,
            summaries=summaries, size_weighted=size_weighted, causal=causal,
            summary_mass=(mass[:, 1] if summaries else torch.zeros(heads, n, device=q.device, dtype=q.dtype)).cpu())
        cost = span_cost(engine, q, k, v, starts.numel() if summaries else 0, levels=int(summaries))
        return Result(out, engine.weights, structure=structure, cost=cost, reach_fn=engine.reach)

    @staticmethod
    def _summaries(q, k, v, starts, seg, seg_ends, size_weighted, causal) -> NodeLevel:
        n = k.shape[1]
        key, value, sizes, bias = pooled_nodes(k, v, starts, n, size_weighted)
        nodes = torch.arange(starts.numel(), device=k.device)

        def allowed(rows):
            own = seg[rows, None]
            ok = nodes[None] != own
            if causal:
                ok &= seg_ends[None] <= starts[own]
            return 0, nodes.numel(), ok

        return NodeLevel(starts, sizes, seg, key, value, bias, allowed, lambda rows: q[:, rows])


MECHANISM = Segmented()
