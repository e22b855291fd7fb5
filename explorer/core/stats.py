"""Dense attention statistics: per-query log-sum-exp, entropy, max weight, top-k keys,
a pooled map at display resolution and the output, never forming the n x n matrix.

Two passes compute the same numbers:
- `attention_stats` / `stream_stats`, the fast pass (explorer.core.binned): keys laid
  out by display bin, so that every statistic is a contiguous reduction or a matmul
  of one score block. Max weight and top-k come from that same block (bin maxima,
  then the kk best bins), for every row: no second pass is needed.
- `reference_stats`, the plain chunked softmax it is tested against.
Why eager torch: on this project's 2-core CPU (n = 16k, one head) the whole pass
takes 0.6 s; the score matmul and reductions alone took 0.35 s eager against
0.65 s under torch.compile, and FlexAttention (compiled, 60 s to compile) took 5 s
for the output alone and cannot return the log-sum-exp on the CPU. So nothing is
compiled and the first call costs no more than the next. The fused SDPA kernel
takes 0.18 s there, but gives only the output.

Memory of both: O(n * head_dim + chunk * n).

Both take a model's AttentionRule (explorer.core.rule: scale, causal or sliding-window
mask, soft-cap, position bias, sinks) for the statistics of attention as the model computes it;
without one, the plain softmax (q . k / sqrt(d), causal when told).

Progressive use (a preview first, exact at the end, one pass):
    for done, acc in stream_stats(q, k, v, rows=preview_first(n, 512)):  # explorer.core.rows
        partial = by_position(acc.result())    # exact for the rows done: 512 spread over the text, then a prefix
    # the last partial equals attention_stats(q, k, v): rows None, every row in order
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch

from explorer.core.binned import BlockStats, bin_keys, grouped_block_stats
from explorer.core.checks import as_rows, check_qkv
from explorer.core.device import chunk_rows, synchronize
from explorer.core.pooling import MapAccumulator, PooledMap
from explorer.core.rows import row_chunks
from explorer.core.rule import AttentionRule

_CPU_ROWS = 256  # query rows per block on the CPU, one head at a time: fastest measured at n = 16k and 129k
_GPU_BLOCK = 2**28  # on an accelerator: 1 GiB of scores, launches amortised yet n = 131k x 12 heads under 4 GB


@dataclass
class AttentionStats:
    """Per-row fields describe the query rows `rows` (None: every row 0..n-1, in order).

    map pools only those rows: map.per_bin is None when every row was pooled,
    else the most rows pooled into one row bin; row bins with none are NaN.
    """

    lse: torch.Tensor  # [heads, rows] log-sum-exp of the scaled scores
    entropy: torch.Tensor  # [heads, rows] nats
    max_weight: torch.Tensor  # [heads, rows]
    topk_index: torch.Tensor  # [heads, rows, k]
    topk_weight: torch.Tensor  # [heads, rows, k]
    map: PooledMap  # whole sequence at display resolution, pooling only the rows computed
    output: torch.Tensor  # [heads, rows, head_dim]
    seconds: float
    chunk: int
    rows: torch.Tensor | None = None


def check_args(q, k, v, grid: int, topk: int, rule: AttentionRule | None, rows=None):
    """q, k, v as the pass computes with them (check_qkv) and rows as a LongTensor (or None), or ValueError."""
    q, k, v = check_qkv(q, k, v)
    if grid < 1 or topk < 1:
        raise ValueError(f"grid and topk must be at least 1, got grid={grid}, topk={topk}")
    if rule is not None and not isinstance(rule, AttentionRule):
        raise ValueError(f"rule must be an AttentionRule or None, got {type(rule).__name__}")
    if rule is not None:
        rule.check_heads(q.shape[0])
    if rows is not None:
        rows = as_rows(rows, q.shape[1], q.device)
        if not rows.numel():
            raise ValueError("rows must list at least one query")
    return q, k, v, rows


def stats_chunk(n: int, heads: int, device: torch.device) -> tuple[int, int]:
    """Query rows per block and heads per group of the fast pass: a few hundred rows of one head
    on the CPU; elsewhere every head, and as many rows as fit 1 GiB of scores."""
    if torch.device(device).type == "cpu":
        return min(n, _CPU_ROWS), 1
    return max(1, min(_GPU_BLOCK // (heads * n), chunk_rows(n, heads, device, buffers=2))), heads


class StatsAccumulator:
    """The rows of a pass done so far: per-row results in order, and the pooled map's sums."""

    def __init__(self, q: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None, grid: int, kk: int, chunk: int):
        heads, n, _ = q.shape
        self.every = rows is None  # every row in order: the finished result says rows=None, per_bin=None
        rows = torch.arange(n, device=q.device) if rows is None else rows
        self.n, self.rows, self.chunk, self.done = n, rows, chunk, 0
        self.start = time.perf_counter()
        m = rows.numel()
        self.lse = torch.empty(heads, m, device=q.device, dtype=q.dtype)
        self.entropy, self.peak = torch.empty_like(self.lse), torch.empty_like(self.lse)
        self.top_i = torch.empty(heads, m, kk, dtype=torch.long, device=q.device)
        self.top_w = torch.empty_like(self.top_i, dtype=q.dtype)
        self.out = torch.empty(heads, m, v.shape[2], device=q.device, dtype=v.dtype)
        self.map = MapAccumulator(heads, (0, n), (0, n), grid, q.device)

    def add(self, block: BlockStats) -> None:
        span = slice(self.done, self.done + block.lse.shape[1])
        self.lse[:, span], self.entropy[:, span], self.peak[:, span] = block.lse, block.entropy, block.max_weight
        self.top_i[:, span], self.top_w[:, span] = block.topk_index, block.topk_weight
        self.out[:, span] = block.output
        self.map.add_binned(self.rows[span], block.bin_sum, block.bin_max)
        self.done = span.stop

    def result(self) -> AttentionStats:
        """AttentionStats of the rows done so far (a copy; the pass may go on)."""
        synchronize(self.lse.device)
        done = slice(0, self.done)
        every = self.every and self.done == self.n
        per_bin = None if every else max(1, int(self.map.rcount.max()))
        out = self.out if self.done == self.rows.numel() else self.out[:, done].clone()
        return AttentionStats(self.lse[:, done].cpu(), self.entropy[:, done].cpu(), self.peak[:, done].cpu(),
                              self.top_i[:, done].cpu(), self.top_w[:, done].cpu(), self.map.result(per_bin),
                              out, time.perf_counter() - self.start, self.chunk,
                              None if every else self.rows[done].cpu())


def stream_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, grid: int = 256,
                 topk: int = 8, rows=None, chunk: int | None = None,
                 rule: AttentionRule | None = None) -> Iterator[tuple[int, StatsAccumulator]]:
    """The fast pass block by block: yields (rows done, accumulator) after every block of `chunk` rows.

    rows: query indices to compute, in the order given (default every row);
    acc.result() is then an AttentionStats of rows[:done] whose map pools only
    those rows (row bins not reached yet are NaN). Memory O(n * head_dim + chunk * n).
    rule: attention as a model computes it (its causality replaces `causal`).
    Bad arguments raise here, before the first block.
    """
    q, k, v, rows = check_args(q, k, v, grid, topk, rule, rows)
    heads, n, _ = q.shape
    rows_per_block, group = stats_chunk(n, heads, q.device)
    return _blocks(q, k, v, causal, grid, min(topk, n), rows, chunk or rows_per_block, group, rule)


@torch.no_grad()  # on a generator torch applies it per step, so the caller's grad mode is left alone
def _blocks(q, k, v, causal: bool, grid: int, kk: int, rows, chunk: int, group: int, rule: AttentionRule | None):
    keys = bin_keys(k, v, grid)
    acc = StatsAccumulator(q, v, rows, grid, kk, chunk)
    buffer = keys.buffer(group, min(chunk, acc.rows.numel()))
    sinks = None
    if rule is not None:  # the pass scales by 1/sqrt(d): the rule's own scale goes into q
        causal, sinks = rule.causal, rule.sink_logits(q.shape[0], q)
        q = q * (rule.scaling * q.shape[-1] ** 0.5)
    for block in acc.rows.split(chunk):
        acc.add(grouped_block_stats(q[:, block], block, keys, causal, kk, buffer, group, rule, sinks))
        yield acc.done, acc


def attention_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, grid: int = 256,
                    topk: int = 8, rows=None, chunk: int | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    rule: AttentionRule | None = None) -> AttentionStats:
    """Exact statistics of every query row, or only of `rows` (see stream_stats); with a rule,
    of attention as the model computes it (doc.model_rule).

    progress, if given, is called with (rows done, rows to do) after every block.
    """
    for done, acc in stream_stats(q, k, v, causal, grid, topk, rows, chunk, rule):
        if progress:
            progress(done, acc.rows.numel())
    return acc.result()


def by_position(stats: AttentionStats) -> AttentionStats:
    """The same statistics with their rows in text order; rows and map.per_bin None when the rows are
    every row once (so a pass in preview_first's order ends equal to one in order)."""
    if stats.rows is None:
        return stats
    order = stats.rows.argsort()
    rows = stats.rows[order]
    n = stats.map.row_edges[-1] - stats.map.row_edges[0]
    every = rows.numel() == n and torch.equal(rows, torch.arange(n))
    pick = order.to(stats.output.device)
    return replace(stats, lse=stats.lse[:, order], entropy=stats.entropy[:, order],
                   max_weight=stats.max_weight[:, order], topk_index=stats.topk_index[:, order],
                   topk_weight=stats.topk_weight[:, order], output=stats.output[:, pick],
                   map=replace(stats.map, per_bin=None) if every else stats.map, rows=None if every else rows)


def reference_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    grid: int = 256, topk: int = 8, chunk: int | None = None, progress=None,
                    rule: AttentionRule | None = None) -> AttentionStats:
    """The plain pass: each chunk's full softmax, then every statistic from it. Slow; the tests' yardstick.
    With a sink, the entropy counts the sink's slot, as the model's softmax has it."""
    q, k, v, _ = check_args(q, k, v, grid, topk, rule)
    heads, n, _ = q.shape
    rule = rule or AttentionRule.plain(q.shape[-1], causal)
    chunk = chunk or chunk_rows(n, heads, q.device)
    start = time.perf_counter()
    kk = min(topk, n)
    lse = torch.empty(heads, n, device=q.device, dtype=q.dtype)
    entropy, peak = torch.empty_like(lse), torch.empty_like(lse)
    top_i = torch.empty(heads, n, kk, dtype=torch.long, device=q.device)
    top_w = torch.empty_like(top_i, dtype=q.dtype)
    out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
    acc = MapAccumulator(heads, (0, n), (0, n), grid, q.device)
    sink = rule.sink_logits(heads, q)
    with torch.no_grad():
        for rows in row_chunks(n, chunk, q.device):
            s = rule.scores(q, k, rows)
            norm = rule.normaliser(s)
            p = torch.exp(s - norm)
            lse[:, rows] = norm.squeeze(-1)
            spent = torch.special.xlogy(p, p).sum(-1)
            if sink is not None:
                ps = torch.exp(sink - norm).squeeze(-1)
                spent = spent + torch.special.xlogy(ps, ps)
            entropy[:, rows] = -spent
            top_w[:, rows], top_i[:, rows] = torch.topk(p, kk, dim=-1)
            peak[:, rows] = top_w[:, rows, 0]
            out[:, rows] = torch.matmul(p, v)
            acc.add(rows, p)
            if progress:
                progress(int(rows[-1]) + 1, n)
    synchronize(q.device)
    return AttentionStats(lse.cpu(), entropy.clamp_min(0).cpu(), peak.cpu(), top_i.cpu(), top_w.cpu(),
                          acc.result(), out, time.perf_counter() - start, chunk)
