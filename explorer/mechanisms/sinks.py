"""Sink + window attention (StreamingLLM, Xiao et al., ICLR 2024).

Each query i attends, in one softmax, to the first `sinks` tokens (the
attention sinks, kept forever in StreamingLLM's cache) and to a window of the
`window` most recent tokens up to itself, keys max(0, i - w + 1) .. i. A key
that is both a sink and in the window counts once. This is causal by nature
(the published form, and the default). With causal off, the choice here is a
symmetric window of the keys within distance w - 1 on either side
(|i - j| < w) plus the sinks, which every query sees.

Deviation from the paper: StreamingLLM gives cached tokens their positions
inside the rolling cache; here q and k keep the positions the model gave them
(what one layer's attention reaches, not a re-encoded stream).

Memory O(n * (s + w)): queries go in blocks, each against its sinks and the
band of keys its windows cover, never an n x n matrix.

structure: SinksStructure (each query's window, and its attention on the sinks).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer.mechanisms.base import Mechanism, Param, Result, Structure

_BLOCK = 128  # fewest queries per block: a narrow window still makes batched matmuls of some size
_GROUP_BYTES = 32 * 2**20  # scores of the blocks done together: few calls per text, and a bounded peak


@dataclass
class SinksStructure(Structure):
    """What each query saw, and how much of its attention the sinks took."""

    sinks: int  # as used: clamped to n
    window: int
    causal: bool
    window_start: torch.Tensor  # LongTensor [n] first key of each query's window
    window_stop: torch.Tensor  # LongTensor [n] one past its last key
    sink_mass: torch.Tensor  # [heads, n] each query's attention on the sink tokens


def window_bounds(n: int, window: int, causal: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's window [lo, hi): the last `window` keys up to it, or those within window - 1 of it."""
    i = torch.arange(n, device=device)
    return (i - window + 1).clamp_min(0), (i + 1) if causal else (i + window).clamp_max(n)


class SinkWindow:
    """One softmax per query over its sinks and its window, for any set of query rows."""

    def __init__(self, q, k, v, sinks: int, lo: torch.Tensor, hi: torch.Tensor, causal: bool):
        self.q, self.k, self.v, self.sinks, self.lo, self.hi, self.causal = q, k, v, sinks, lo, hi, causal

    def keys(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Key positions the rows need (sorted: sinks before the windows, the windows' union, sinks after)
        and which of them each row sees."""
        a, b, dev = int(self.lo[rows].min()), int(self.hi[rows].max()), rows.device
        keys = torch.cat([torch.arange(min(self.sinks, a), device=dev), torch.arange(a, b, device=dev),
                          torch.arange(b, max(b, self.sinks), device=dev)])
        sink = keys[None] < self.sinks
        if self.causal:
            sink = sink & (keys[None] <= rows[:, None])
        return keys, sink | ((keys[None] >= self.lo[rows, None]) & (keys[None] < self.hi[rows, None]))

    def probs(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        keys, ok = self.keys(rows)
        s = torch.matmul(self.q[:, rows], self.k[:, keys].transpose(1, 2)) * self.q.shape[-1] ** -0.5
        return keys, torch.softmax(s.masked_fill(~ok, float("-inf")), dim=-1)

    def weights(self, rows) -> torch.Tensor:
        keys, p = self.probs(rows)
        w = p.new_zeros(p.shape[0], len(rows), self.q.shape[1])
        w[:, :, keys] = p
        return w

    def reach(self, rows) -> torch.Tensor:
        keys, ok = self.keys(rows)
        out = torch.zeros(len(rows), self.q.shape[1], dtype=torch.bool, device=rows.device)
        out[:, keys] = ok
        return out[None].expand(self.q.shape[0], -1, -1)


def band_attention(q, k, v, sinks: int, window: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [heads, n, dv] and sink mass [heads, n] of every query, in a few batched calls: the
    queries in blocks, each block's keys its sinks then one strided slice of k (its band: the block
    and the window before it, and after it without the causal mask), one softmax over both.
    A loop over small row chunks cost about rows / 256 x 20 kernel calls, each one a wait for every
    CPU thread: seconds on a loaded machine for work that takes a tenth of that."""
    heads, n, d = q.shape
    w = min(window, n)
    block = min(n, max(w, _BLOCK))  # queries per block; its band has block + w - 1 keys (+ w - 1 after)
    before, after = w - 1, 0 if causal else w - 1
    span, count = block + before + after, -(-n // block)
    pad = (0, 0, before, count * block - n + after)
    kb = F.pad(k, pad).unfold(1, span, block).transpose(-1, -2)  # [heads, count, span, d], a view
    vb = F.pad(v, pad).unfold(1, span, block).transpose(-1, -2)
    qb = F.pad(q, (0, 0, 0, count * block - n)).view(heads, count, block, d)
    row = torch.arange(count * block, device=q.device).view(count, block, 1)
    key = torch.cat([torch.arange(sinks, device=q.device).expand(count, -1),  # the sinks, then the band
                     torch.arange(count, device=q.device)[:, None] * block - before
                     + torch.arange(span, device=q.device)], dim=1)[:, None]
    seen = (key >= row - before) & (key <= row + after) & (key >= sinks) & (key < n)
    seen[..., :sinks] = key[..., :sinks] <= row if causal else True
    out = q.new_empty(heads, count * block, v.shape[2])
    sink_mass = q.new_empty(heads, count * block)
    group = max(1, _GROUP_BYTES // (heads * block * (sinks + span) * q.element_size()))
    for g in range(0, count, group):
        part, rows = slice(g, g + group), slice(g * block, (g + group) * block)
        blocks = kb[:, part].shape[1]
        keys = torch.cat([k[:, None, :sinks].expand(-1, blocks, -1, -1), kb[:, part]], dim=2)
        values = torch.cat([v[:, None, :sinks].expand(-1, blocks, -1, -1), vb[:, part]], dim=2)
        s = torch.matmul(qb[:, part], keys.transpose(-1, -2)).mul_(d**-0.5).masked_fill_(~seen[part], float("-inf"))
        p = torch.softmax(s, dim=-1)
        out[:, rows] = torch.matmul(p, values).flatten(1, 2)
        sink_mass[:, rows] = p[..., :sinks].sum(-1).flatten(1)
    return out[:, :n], sink_mass[:, :n]


class Sinks(Mechanism):
    key = "sinks"
    title = "Sink + window (StreamingLLM)"
    summary = (
        "Each token attends to the first few tokens of the text (the attention sinks, which trained models "
        "load with spare attention) and to a window of the most recent tokens up to itself, as StreamingLLM "
        "keeps them in its cache; everything in between is dropped. Without the causal mask the window "
        "reaches as far after the query as before it.")
    params = (
        Param("sinks", 4, 0, 1_000_000, help="the first s tokens every query also attends to",
              label="Sink tokens s (the text's first)"),
        Param("window", 256, 1, 1_000_000, help="the query and the w - 1 tokens before it (and after it without "
              "the causal mask)", label="Window w (recent tokens, the query included)"),
        Param("causal", True, help="StreamingLLM's form: keys after the query hidden; off: a window of "
              "w - 1 on each side", label="Causal mask (StreamingLLM)"),
    )

    def compute(self, q, k, v, sinks, window, causal):
        heads, n, d = q.shape
        dv = v.shape[2]
        sinks = min(sinks, n)
        lo, hi = window_bounds(n, window, causal, q.device)
        engine = SinkWindow(q, k, v, sinks, lo, hi, causal)
        out, sink_mass = band_attention(q, k, v, sinks, window, causal)
        pairs = (hi - lo).sum() + lo.clamp_max(sinks).sum()  # window keys, sinks before the window
        pairs = int(pairs if causal else pairs + (sinks - hi).clamp_min(0).sum())  # and after it
        cost = {"flops": 2 * heads * pairs * (d + dv), "bytes": 4 * heads * (pairs + n * (2 * d + 2 * dv))}
        structure = SinksStructure(sinks, window, causal, lo.cpu(), hi.cpu(), sink_mass.cpu())
        return Result(out, engine.weights, structure=structure, cost=cost, reach_fn=engine.reach)


MECHANISM = Sinks()
