"""Relative position's page analyses: the position term against distance and over a window,
attention against distance, and RoPE's decay on the actual queries and keys."""
from __future__ import annotations

import math

import torch

from explorer.core.checks import check_qkv
from explorer.core.pooling import MapAccumulator, PooledMap, check_window, sampled_rows
from explorer.core.rows import sample_rows
from explorer.mechanisms.relpos import (
    MECHANISM,
    default_distances,
    mean_by_distance,
    pair_scores,
    rope_bound,
    rope_rotate,
)


def bias_curve(q, k, distances=None, max_rows: int = 256, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, mean position term [heads, D]); distances default to the whole range."""
    q, k, _ = check_qkv(q, k)
    term = MECHANISM.position_term(q, k, params)
    if distances is None:
        distances = default_distances(term.n, term.causal)
    distances = torch.as_tensor(distances, dtype=torch.long)
    with torch.no_grad():
        return distances, term.curve(distances, max_rows).cpu()


def bias_map(q, k, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None,
             grid: int = 256, chunk: int = 256, per_bin: int | None = None, **params) -> PooledMap:
    """The position term over one window only, pooled to the grid (mean and max), streamed over rows.

    per_bin: on long windows pool that many evenly spaced query rows per row
    bin, as explorer.core.pooling.pooled_map does.
    """
    q, k, _ = check_qkv(q, k)
    term = MECHANISM.position_term(q, k, params)
    heads, n, _ = q.shape
    (r0, r1), (c0, c1) = check_window(rows, cols, n)
    acc = MapAccumulator(heads, (r0, r1), (0, c1 - c0), grid, q.device)  # columns counted from c0
    keys = torch.arange(c0, c1, device=q.device)
    picked = sampled_rows(r0, r1, grid, per_bin, q.device)
    with torch.no_grad():
        for block in picked.split(chunk):
            acc.add(block, term.pairs(block, keys))
    pooled = acc.result(per_bin if picked.numel() < r1 - r0 else None)
    return PooledMap(pooled.mean, pooled.max, pooled.row_edges, [c0 + e for e in pooled.col_edges], pooled.per_bin)


def distance_edges(n: int, count: int = 48) -> torch.Tensor:
    """Bin edges over |distance| in [0, n): single distances near 0, log-spaced beyond."""
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    geo = torch.logspace(0, math.log10(max(n, 2)), count, dtype=torch.float64).round().long()
    return torch.cat([torch.tensor([0]), geo, torch.tensor([n])]).clamp(max=n).unique()


def attention_by_distance(weights_fn, n: int, heads: int, causal: bool = False, max_rows: int = 512,
                          bins: int = 48, chunk: int = 128, device=None) -> dict:
    """Mean attention weight per (query, key) pair in each |distance| band, on a row sample.

    weights_fn(rows) -> [heads, len(rows), n] (dense's or a Result's). Returns
    edges [B + 1] (band b is edges[b] <= |j - i| < edges[b + 1]), mean
    [heads, B] (weight per pair; causal counts only keys at or before the
    query) and mass [heads, B] (a query's total weight in the band, averaged).
    """
    edges = distance_edges(n, bins).to(device)
    count = edges.numel() - 1
    rows_all = sample_rows(n, max_rows).to(device)
    total = torch.zeros(heads, count, device=device)
    pairs = torch.zeros(count, device=device)
    keys = torch.arange(n, device=device)
    with torch.no_grad():
        for s in range(0, rows_all.numel(), chunk):
            rows = rows_all[s : s + chunk]
            dist = keys[None, :] - rows[:, None]
            band = torch.bucketize(dist.abs(), edges, right=True) - 1
            allowed = (dist <= 0) if causal else torch.ones_like(dist, dtype=torch.bool)
            w = weights_fn(rows)
            total.index_add_(1, band.flatten(), w.reshape(heads, -1))
            pairs += torch.bincount(band[allowed], minlength=count)
    queries = rows_all.numel()
    return {"edges": edges.cpu(), "mean": (total / pairs.clamp_min(1)).cpu(), "mass": (total / queries).cpu(),
            "pairs": pairs.cpu()}


def rope_decay(q, k, theta: float = 10000.0, distances=None, max_rows: int = 256, causal: bool = False) -> dict:
    """Mean score q_i.k_{i+m} / sqrt(d) against distance m, with and without RoPE, for these q, k.

    Returns distances [D], rope [heads, D], plain [heads, D] and RoFormer's
    content-free bound [D] for comparison.
    """
    q, k, _ = check_qkv(q, k)
    n = q.shape[1]
    if distances is None:
        distances = default_distances(n, causal)
    distances = torch.as_tensor(distances, dtype=torch.long)
    qr, kr = rope_rotate(q, theta), rope_rotate(k, theta)
    with torch.no_grad():
        rope = mean_by_distance(lambda r, c: pair_scores(qr, kr, r, c), n, distances, max_rows, q.device)
        plain = mean_by_distance(lambda r, c: pair_scores(q, k, r, c), n, distances, max_rows, q.device)
    return {"distances": distances, "rope": rope.cpu(), "plain": plain.cpu(),
            "bound": rope_bound(q.shape[2], theta, distances.abs()).float()}

