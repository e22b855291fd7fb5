"""Segmented (blockwise) attention, with optional per-segment summaries.

The sequence is cut into contiguous segments (explorer.segments). A query in
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

Segments come from `segment_length` (fixed length, the last one shorter, a
length over n gives one segment = dense) or from an explicit `boundaries`
list of segment start token indices (strictly increasing, first 0, all < n),
which the page computes with explorer.segments.by_structure from the Doc's
text and offsets (sentences, paragraphs); `boundaries` overrides
`segment_length`.

structure: starts, ends, sizes (LongTensor [segments]), overlap, summaries,
size_weighted, causal, and summary_mass (float [heads, n]: the share of each
query's attention that went to summaries, 0 without them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from explorer import segments
from explorer.attention import row_chunks
from explorer.device import chunk_rows
from explorer.mechanisms.base import Mechanism, Param, Result


@dataclass
class NodeLevel:
    """One level of pooled nodes (contiguous token spans) a query may attend to.

    allowed(rows) -> (c0, c1, mask): the nodes c0..c1-1 contain every node any
    of the rows may reach, mask [len(rows), c1 - c0] says which each row does.
    query(rows) -> [heads, len(rows), d]: the query vectors used at this level.
    """

    starts: torch.Tensor  # [N]
    sizes: torch.Tensor  # [N]
    ids: torch.Tensor  # [n] node of each token
    key: torch.Tensor  # [heads, N, d] mean-pooled keys
    value: torch.Tensor  # [heads, N, dv] mean-pooled values
    bias: torch.Tensor  # [N] added to the scaled score (log size or 0)
    allowed: Callable[[torch.Tensor], tuple[int, int, torch.Tensor]]
    query: Callable[[torch.Tensor], torch.Tensor]


class SpanAttention:
    """One softmax per query over a window of keys [lo_i, hi_i) and pooled nodes.

    A node's softmax mass is spread uniformly over the tokens it covers, so
    weights(rows) @ v equals the output exactly. Parts: 0 = direct keys, then
    one per node level. `flops` and `bytes` count the (query, key or node)
    pairs that are not masked: the work the mechanism needs; the dense tiles
    it runs on also multiply masked pairs, up to about (chunk + segment) /
    segment times more.
    """

    def __init__(self, q, k, v, lo, hi, causal: bool, levels: list[NodeLevel]):
        self.q, self.k, self.v = q, k, v
        self.lo, self.hi, self.causal, self.levels = lo, hi, causal, levels
        self.scale = q.shape[-1] ** -0.5
        self.flops = 0
        self.bytes = 0

    def _parts(self, rows):
        """Masked logits, values and placement of every part for the listed rows."""
        q, k = self.q, self.k
        a, b = int(self.lo[rows].min()), int(self.hi[rows].max())
        keys = torch.arange(a, b, device=q.device)
        ok = (keys[None] >= self.lo[rows, None]) & (keys[None] < self.hi[rows, None])
        if self.causal:
            ok &= keys[None] <= rows[:, None]
        parts = [(torch.matmul(q[:, rows], k[:, a:b].transpose(1, 2)) * self.scale, ok, self.v[:, a:b], a, b)]
        for level in self.levels:
            c0, c1, ok = level.allowed(rows)
            s = torch.matmul(level.query(rows), level.key[:, c0:c1].transpose(1, 2)) * self.scale
            parts.append((s + level.bias[c0:c1], ok, level.value[:, c0:c1], c0, c1))
        return parts

    def _logits(self, rows):
        parts = self._parts(rows)
        return parts, torch.cat([s.masked_fill(~ok, float("-inf")) for s, ok, *_ in parts], dim=-1)

    def _softmax(self, rows):
        parts, z = self._logits(rows)
        p = torch.softmax(z, dim=-1)
        widths = [s.shape[-1] for s, *_ in parts]
        return parts, torch.split(p, widths, dim=-1)

    def run(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Output [heads, n, dv] and the mass per part [heads, parts, n]."""
        heads, n, d = self.q.shape
        dv = self.v.shape[2]
        out = torch.empty(heads, n, dv, device=self.q.device, dtype=self.v.dtype)
        mass = torch.empty(heads, len(self.levels) + 1, n, device=self.q.device)
        for rows in row_chunks(n, chunk, self.q.device):
            parts, probs = self._softmax(rows)
            out[:, rows] = sum(torch.matmul(p, val) for p, (_, _, val, _, _) in zip(probs, parts))
            mass[:, :, rows] = torch.stack([p.sum(-1) for p in probs], dim=1)
            pairs = sum(int(ok.sum()) for _, ok, *_ in parts)
            self.flops += 2 * heads * pairs * (d + dv)
            self.bytes += 4 * heads * pairs
        return out, mass

    def logsumexp(self, chunk: int) -> torch.Tensor:
        """[heads, n]: log of each query's softmax normaliser over everything it reaches."""
        lse = torch.empty(self.q.shape[0], self.q.shape[1], device=self.q.device)
        for rows in row_chunks(self.q.shape[1], chunk, self.q.device):
            lse[:, rows] = torch.logsumexp(self._logits(rows)[1], dim=-1)
        return lse

    def _spread(self, rows):
        """Each part's weights on the original keys, [heads, len(rows), n], one part at a time."""
        parts, probs = self._softmax(rows)
        heads, r = probs[0].shape[:2]
        _, _, _, a, b = parts[0]
        direct = torch.zeros(heads, r, self.q.shape[1], device=self.q.device, dtype=probs[0].dtype)
        direct[:, :, a:b] = probs[0]
        yield direct
        for level, p, (_, _, _, c0, c1) in zip(self.levels, probs[1:], parts[1:]):
            node = torch.zeros(heads, r, level.sizes.numel(), device=p.device, dtype=p.dtype)
            node[:, :, c0:c1] = p / level.sizes[c0:c1].to(p.dtype)
            yield node[:, :, level.ids]

    def weights_by_part(self, rows) -> torch.Tensor:
        """[heads, parts, len(rows), n]: what each part puts on the original keys."""
        return torch.stack(list(self._spread(rows)), dim=1)

    def weights(self, rows) -> torch.Tensor:
        """[heads, len(rows), n], summed part by part (never all parts in memory at once)."""
        parts = self._spread(rows)
        w = next(parts)
        for part in parts:
            w += part
        return w

    def reach(self, rows) -> torch.Tensor:
        """Keys each row attends to, directly or through a node (exp underflow aside)."""
        parts = self._parts(rows)
        heads, n = self.q.shape[0], self.q.shape[1]
        out = torch.zeros(len(rows), n, dtype=torch.bool, device=self.q.device)
        _, ok, _, a, b = parts[0]
        out[:, a:b] = ok
        for level, (_, ok, _, c0, c1) in zip(self.levels, parts[1:]):
            node = torch.zeros(len(rows), level.sizes.numel(), dtype=torch.bool, device=ok.device)
            node[:, c0:c1] = ok
            out |= node[:, level.ids]
        return out[None].expand(heads, -1, -1)


def span_cost(engine: SpanAttention, q, k, v, nodes: int, levels: int, pooled_queries: bool = False) -> dict:
    """Score pairs (from the engine), pooling n tokens once per node level, reading q, k, v, writing out."""
    heads, n, d = q.shape
    dv = v.shape[2]
    pool = levels * heads * n * (d + dv + (d if pooled_queries else 0))
    tensors = 4 * heads * (n * (2 * d + 2 * dv) + nodes * (d + dv))
    return {"flops": engine.flops + pool, "bytes": engine.bytes + tensors}


def row_chunk(n: int, heads: int, longest: int, nodes: int, device) -> int:
    """Query rows per chunk, within the device's memory budget: on the CPU about a segment's worth
    (masked work grows with the chunk), on an accelerator more (kernel launches dominate there)."""
    rows = max(256 if torch.device(device).type == "cpu" else 2048, longest)
    return max(1, min(rows, chunk_rows(min(n, 2 * rows + longest) + nodes, heads, device)))


def pooled_nodes(k, v, starts, n: int, size_weighted: bool):
    """Mean-pooled keys and values of spans starting at `starts`, sizes, and score bias."""
    sizes = segments.sizes(starts, n)
    bias = torch.log(sizes.to(k.dtype)) if size_weighted else torch.zeros(sizes.numel(), device=k.device, dtype=k.dtype)
    return segments.pool_mean(k, starts), segments.pool_mean(v, starts), sizes, bias


def make_starts(n: int, segment_length: int, boundaries, device) -> torch.Tensor:
    """Explicit boundaries when given (validated), else fixed segments of the given length."""
    if boundaries is not None:
        return segments.check(boundaries, n, device=device)
    return segments.fixed(n, min(segment_length, n), device=device)


def windows(starts: torch.Tensor, n: int, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's direct key window [lo, hi): its segment plus `overlap` keys before it."""
    seg = segments.ids(starts, n)
    return (starts - overlap).clamp_min(0)[seg], segments.ends(starts, n)[seg]


def outside_mass(q, k, dense_lse, segment_length: int = 128, overlap: int = 0, causal: bool = False,
                 boundaries=None) -> torch.Tensor:
    """[heads, n]: the share of DENSE attention each query puts outside its own window.

    dense_lse is dense attention's per-query log-sum-exp [heads, n] (explorer.dense_stats):
    the share inside is exp(lse over the window - dense lse), so no n x n pass is needed.
    """
    heads, n, _ = q.shape
    starts = make_starts(n, segment_length, boundaries, q.device)
    lo, hi = windows(starts, n, overlap)
    engine = SpanAttention(q, k, k, lo, hi, causal, [])
    inside = engine.logsumexp(row_chunk(n, heads, int(segments.sizes(starts, n).max()) + overlap, 0, q.device))
    return (1 - torch.exp(inside - dense_lse.to(inside.device))).clamp_min(0)


class Segmented(Mechanism):
    key = "segmented"
    title = "Segmented attention"
    summary = ("Each token attends only within its segment (fixed length or the text's sentences and "
               "paragraphs), optionally plus a few keys before it and a pooled summary of every other segment.")
    params = (
        Param("segment_length", 128, 1, None, help="tokens per segment (clamped to n); ignored with boundaries"),
        Param("overlap", 0, 0, None, help="extra keys before its segment's start that a query also sees"),
        Param("summaries", False, help="also attend to a mean-pooled summary (key, value) of every other segment"),
        Param("size_weighted", True, help="a summary scores as its segment's size of keys (adds log size)"),
        Param("causal", False, help="mask keys (and summaries of segments) after the query"),
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
        out, mass = engine.run(chunk)
        structure = {
            "starts": starts.cpu(), "ends": seg_ends.cpu(), "sizes": sizes.cpu(), "overlap": overlap,
            "summaries": summaries, "size_weighted": size_weighted, "causal": causal,
            "summary_mass": (mass[:, 1] if summaries else torch.zeros(heads, n, device=q.device)).cpu(),
        }
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
