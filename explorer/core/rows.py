"""Which query rows to compute: consecutive chunks for streamed passes, even samples for long texts."""
from __future__ import annotations

import torch


def row_chunks(n: int, size: int, device=None):
    """Consecutive LongTensor blocks of row indices covering 0..n-1."""
    for start in range(0, n, size):
        yield torch.arange(start, min(n, start + size), device=device)


def sample_rows(n: int, max_rows: int) -> torch.Tensor:
    """All rows when they fit, else max_rows evenly spaced ones (first and last included)."""
    if n <= max_rows:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_rows).round().long().unique()


def preview_first(n: int, preview: int) -> torch.Tensor:
    """Every row 0..n-1 once: `preview` evenly spaced ones first (sample_rows), then the others in
    order. A pass streaming rows in this order has the whole text's shape after its first blocks,
    and every row at the end."""
    first = sample_rows(n, preview)
    rest = torch.ones(n, dtype=torch.bool)
    rest[first] = False
    return torch.cat([first, rest.nonzero().flatten()])
