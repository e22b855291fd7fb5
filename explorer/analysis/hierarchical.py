"""Hierarchical attention's page analysis: what each level of the tree puts on the original keys."""
from __future__ import annotations

from typing import Callable

import torch

from explorer.core.checks import as_rows, check_qkv
from explorer.core.device import chunk_rows
from explorer.core.pooling import MapAccumulator, PooledMap, check_window, sampled_rows
from explorer.mechanisms.hierarchical import MECHANISM


def by_level(q, k, v, **params) -> Callable[[torch.Tensor], torch.Tensor]:
    """rows -> [heads, parts, len(rows), n]: each part's share of the effective weights
    (part 0: the own chunk's tokens, part l: the level-l nodes); their sum is `weights`."""
    q, k, v = check_qkv(q, k, v)
    _, engine = MECHANISM.build(q, k, v, **MECHANISM.validate(params))
    return lambda rows: engine.weights_by_part(as_rows(rows, q.shape[1], q.device))


def level_maps(parts_fn: Callable[[torch.Tensor], torch.Tensor], parts: int, heads: int, n: int,
               rows: tuple[int, int], cols: tuple[int, int], grid: int = 256, per_bin: int | None = None,
               device=None, progress: Callable[[int, int], None] | None = None) -> list[PooledMap]:
    """One pooled map per part of `by_level`, over one window, in a single streamed pass
    (progress(rows pooled, rows to pool) after every chunk)."""
    rows, cols = check_window(rows, cols, n)
    device = torch.device(device or "cpu")
    accs = [MapAccumulator(heads, rows, cols, grid, device) for _ in range(parts)]
    picked = sampled_rows(*rows, grid, per_bin, device)
    done = 0
    for block in picked.split(chunk_rows(n * parts, heads, device)):
        w = parts_fn(block)
        for p, acc in enumerate(accs):
            acc.add(block, w[:, p])
        done += block.numel()
        if progress:
            progress(done, picked.numel())
    sampled = per_bin if picked.numel() < rows[1] - rows[0] else None
    return [acc.result(sampled) for acc in accs]

