"""The span engine behind segmented and hierarchical attention: one exact softmax per query
over a window of tokens [lo_i, hi_i) and levels of pooled nodes (contiguous spans with a
mean key and value), each node's mass spread evenly over the tokens it covers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core import segments
from explorer.core.device import chunk_rows
from explorer.core.rows import row_chunks
from explorer.core.windows import segment_attention


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

    def run(self, chunk: int, starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Output [heads, n, dv] and the mass per part [heads, parts, n].

        Given `starts` (segments whose tokens share one key window) and no node
        levels, the batched kernel of explorer.core.windows when its padding is
        small (measured 5x faster on the CPU at n = 16k); else, and as the
        reference, the loop over row chunks.
        """
        if starts is not None and not self.levels:
            fast = segment_attention(self.q, self.k, self.v, starts, self.lo[starts], self.hi[starts], self.causal)
            if fast is not None:
                out, pairs = fast
                self.tally(pairs)
                return out, out.new_ones(self.q.shape[0], 1, self.q.shape[1])
        heads, n, d = self.q.shape
        dv = self.v.shape[2]
        out = torch.empty(heads, n, dv, device=self.q.device, dtype=self.v.dtype)
        mass = torch.empty(heads, len(self.levels) + 1, n, device=self.q.device, dtype=self.q.dtype)
        for rows in row_chunks(n, chunk, self.q.device):
            parts, probs = self._softmax(rows)
            out[:, rows] = sum(torch.matmul(p, val) for p, (_, _, val, _, _) in zip(probs, parts))
            mass[:, :, rows] = torch.stack([p.sum(-1) for p in probs], dim=1)
            self.tally(sum(int(ok.sum()) for _, ok, *_ in parts))
        return out, mass

    def tally(self, pairs: int) -> None:
        """Count the flops and bytes of `pairs` (query, key or node) pairs."""
        heads, _, d = self.q.shape
        self.flops += 2 * heads * pairs * (d + self.v.shape[2])
        self.bytes += 4 * heads * pairs

    def logsumexp(self, chunk: int) -> torch.Tensor:
        """[heads, n]: log of each query's softmax normaliser over everything it reaches."""
        lse = torch.empty(self.q.shape[0], self.q.shape[1], device=self.q.device, dtype=self.q.dtype)
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

