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

Memory O(n * (s + w)): queries go in chunks, each against its sinks and the
keys of its chunk's windows, never an n x n matrix.

structure: SinksStructure (each query's window, and its attention on the sinks).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.mechanisms.base import Mechanism, Param, Result, Structure
from explorer.mechanisms.spans import row_chunk


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
        out = torch.empty(heads, n, dv, device=q.device, dtype=v.dtype)
        sink_mass = torch.empty(heads, n, device=q.device, dtype=q.dtype)
        chunk = row_chunk(n, heads, min(n, window * (1 if causal else 2)), sinks, q.device)
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(n, start + chunk), device=q.device)
            keys, p = engine.probs(rows)
            out[:, rows] = p @ v[:, keys]
            sink_mass[:, rows] = p[..., keys < sinks].sum(-1)
        pairs = (hi - lo).sum() + lo.clamp_max(sinks).sum()  # window keys, sinks before the window
        pairs = int(pairs if causal else pairs + (sinks - hi).clamp_min(0).sum())  # and after it
        cost = {"flops": 2 * heads * pairs * (d + dv), "bytes": 4 * heads * (pairs + n * (2 * d + 2 * dv))}
        structure = SinksStructure(sinks, window, causal, lo.cpu(), hi.cpu(), sink_mass.cpu())
        return Result(out, engine.weights, structure=structure, cost=cost, reach_fn=engine.reach)


MECHANISM = Sinks()
