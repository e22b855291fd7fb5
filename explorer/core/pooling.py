"""Level of detail: pool an attention window to the display grid, streamed over query rows.

A window of rows [r0, r1) and keys [c0, c1) longer than the grid is split into
`grid` near-equal bins; shorter windows keep full resolution. Both mean and
max pooling are kept: the mean shows where mass goes, the max shows sharp
single-token peaks that the mean would wash out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def bins(start: int, stop: int, grid: int, device=None) -> tuple[torch.Tensor, int]:
    """Bin index of each position in [start, stop) and the number of bins."""
    length = stop - start
    if length < 1:
        raise ValueError(f"empty range {start}..{stop}")
    count = min(grid, length)
    return torch.arange(length, device=device) * count // length, count


def edges(start: int, stop: int, grid: int) -> list[int]:
    """First position of every bin plus `stop`: bin b covers edges[b]..edges[b+1]-1."""
    index, count = bins(start, stop, grid)
    first = torch.searchsorted(index, torch.arange(count)).tolist()
    return [start + f for f in first] + [stop]


@dataclass
class PooledMap:
    """A pooled attention window: mean and max per (query bin, key bin)."""

    mean: torch.Tensor  # [heads, row bins, key bins]
    max: torch.Tensor
    row_edges: list[int]
    col_edges: list[int]
    per_bin: int | None = None  # query rows sampled per row bin; None: every row


class MapAccumulator:
    """Collects pooled sums and maxima of weight blocks as query chunks stream by."""

    def __init__(self, heads: int, rows: tuple[int, int], cols: tuple[int, int], grid: int, device):
        self.rows, self.cols, self.grid = rows, cols, grid
        self.rbin, nr = bins(*rows, grid, device)
        self.cbin, nc = bins(*cols, grid, device)
        self.total = torch.zeros(heads, nr, nc, device=device)
        self.peak = torch.full((heads, nr, nc), float("-inf"), device=device)
        self.rcount = torch.zeros(nr, device=device)
        self.ccount = torch.bincount(self.cbin, minlength=nc).float()

    def add(self, rows: torch.Tensor, w: torch.Tensor) -> None:
        """w: [heads, len(rows), n] weights of rows lying inside the row window."""
        heads, r, _ = w.shape
        nc = self.ccount.numel()
        block = w[:, :, self.cols[0] : self.cols[1]].to(self.total.dtype)  # float64 weights pool in float32
        cidx = self.cbin.expand(heads, r, -1)
        col_sum = torch.zeros(heads, r, nc, device=w.device).index_add_(2, self.cbin, block)
        col_max = torch.full((heads, r, nc), float("-inf"), device=w.device).scatter_reduce_(
            2, cidx, block, "amax", include_self=False)
        self.add_binned(rows, col_sum, col_max)

    def add_binned(self, rows: torch.Tensor, col_sum: torch.Tensor, col_max: torch.Tensor) -> None:
        """Rows already pooled over the key bins: their sum and max per bin, [heads, len(rows), key bins]."""
        heads, r, nc = col_sum.shape
        col_sum, col_max = col_sum.to(self.total.dtype), col_max.to(self.peak.dtype)
        ridx = self.rbin[rows - self.rows[0]]
        self.rcount.index_add_(0, ridx, torch.ones_like(ridx, dtype=self.rcount.dtype))
        self.total.index_add_(1, ridx, col_sum)
        self.peak.scatter_reduce_(1, ridx[None, :, None].expand(heads, r, nc), col_max, "amax")

    def result(self, per_bin: int | None = None) -> PooledMap:
        """Mean and max per bin; row bins no row was pooled into (a partial pass) are NaN in both."""
        mean = self.total / (self.rcount[None, :, None] * self.ccount[None, None, :])
        peak = self.peak.masked_fill((self.rcount == 0)[None, :, None], float("nan"))
        return PooledMap(mean.cpu(), peak.cpu(), edges(*self.rows, self.grid), edges(*self.cols, self.grid),
                         per_bin)


def sampled_rows(start: int, stop: int, grid: int, per_bin: int | None, device=None) -> torch.Tensor:
    """Every row of the window, or `per_bin` evenly spaced rows of each row bin when that is fewer."""
    rows = torch.arange(start, stop, device=device)
    if per_bin is None or stop - start <= grid * per_bin:
        return rows
    e = edges(start, stop, grid)
    picks = [torch.linspace(a, b - 1, min(per_bin, b - a)).round().long() for a, b in zip(e[:-1], e[1:])]
    return torch.cat(picks).unique().to(device)


def check_window(rows: tuple[int, int] | None, cols: tuple[int, int] | None, n: int):
    """(rows, cols) of a map window inside 0..n, each non-empty; None means the whole text."""
    rows, cols = rows or (0, n), cols or (0, n)
    for name, (a, b) in (("rows", rows), ("cols", cols)):
        if not 0 <= a < b <= n:
            raise ValueError(f"{name} window {a}..{b} must lie inside 0..{n} and be non-empty")
    return rows, cols


def pooled_map(weights_fn: Callable[[torch.Tensor], torch.Tensor], heads: int, n: int,
               rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None,
               grid: int = 256, chunk: int = 512, device=None, per_bin: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> PooledMap:
    """Pool weights_fn's rows over a window; never holds more than chunk x n weights.

    per_bin: on long windows, pool only that many evenly spaced query rows per
    row bin (a level-of-detail sample; the PooledMap records it).
    progress(rows pooled, rows to pool) is told after every chunk.
    """
    rows, cols = check_window(rows, cols, n)
    acc = MapAccumulator(heads, rows, cols, grid, device)
    picked = sampled_rows(*rows, grid, per_bin, device)
    done = 0
    for block in picked.split(chunk):
        acc.add(block, weights_fn(block))
        done += block.numel()
        if progress:
            progress(done, picked.numel())
    return acc.result(per_bin if picked.numel() < rows[1] - rows[0] else None)
