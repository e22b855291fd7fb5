"""One text's statistics pass cut into parts of its query rows, and the parts merged back.

Every query row of the dense statistics pass (explorer.core.stats) is computed on its own, so
the rows can be split into parts computed anywhere (other processes, other machines) and merged
into exactly the AttentionStats of one pass: per-row fields in the parts' order, the pooled
map's mean weighted by the rows each part pooled into a row bin, its max the larger of the parts'.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from explorer.core.pooling import bins
from explorer.core.stats import AttentionStats


def split_rows(n: int, parts: int, rows: torch.Tensor | None = None) -> list[torch.Tensor]:
    """`rows` (default every row 0..n-1) cut into `parts` consecutive, near-equal, non-empty parts."""
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts={parts!r} must be a whole number of at least 1")
    if not rows.numel():
        raise ValueError("there are no rows to split")
    return list(rows.tensor_split(min(parts, rows.numel())))


def _row_counts(stats: AttentionStats) -> torch.Tensor:
    """[row bins]: how many of this part's rows its pooled map pooled into each row bin."""
    start, stop = stats.map.row_edges[0], stats.map.row_edges[-1]
    index, count = bins(start, stop, len(stats.map.row_edges) - 1)
    rows = torch.arange(start, stop) if stats.rows is None else stats.rows.cpu()
    return torch.bincount(index[rows - start], minlength=count).to(stats.map.mean.dtype)


def merge_stats(parts: list[AttentionStats]) -> AttentionStats:
    """The AttentionStats of one pass over the parts' rows, in the order given; rows None (and
    the map's per_bin None) when together they are every row once, as attention_stats gives them.
    seconds is the parts' sum: the work, wherever it ran."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0].map
    if any((p.map.row_edges, p.map.col_edges) != (first.row_edges, first.col_edges) for p in parts):
        raise ValueError("cannot merge statistics of different texts or grids")
    counts = torch.stack([_row_counts(p) for p in parts])  # [parts, row bins]
    pooled = counts.sum(0)
    weighted = sum(torch.nan_to_num(p.map.mean) * c[None, :, None] for p, c in zip(parts, counts))
    mean = weighted / pooled[None, :, None]  # row bins no part pooled stay NaN, as in a partial pass
    peak = torch.stack([torch.nan_to_num(p.map.max, nan=float("-inf")) for p in parts]).amax(0)
    peak = peak.masked_fill((pooled == 0)[None, :, None], float("nan"))
    n = first.row_edges[-1] - first.row_edges[0]
    rows = torch.cat([torch.arange(n) if p.rows is None else p.rows.cpu() for p in parts])

    def joined(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in parts], dim=1)

    pooled_map = replace(first, mean=mean, max=peak, per_bin=max(1, int(pooled.max())))
    merged = AttentionStats(joined("lse"), joined("entropy"), joined("max_weight"), joined("topk_index"),
                            joined("topk_weight"), pooled_map,
                            torch.cat([p.output.to(parts[0].output.device) for p in parts], dim=1),
                            sum(p.seconds for p in parts), parts[0].chunk, rows)
    if torch.equal(rows, torch.arange(n)):
        return replace(merged, rows=None, map=replace(merged.map, per_bin=None))
    return merged
