"""Segmented attention's page analysis: how much of dense attention crosses the segments."""
from __future__ import annotations

import torch

from explorer.core import segments
from explorer.core.checks import check_qkv
from explorer.mechanisms.spans import SpanAttention, make_starts, row_chunk, windows


def outside_mass(q, k, dense_lse, segment_length: int = 128, overlap: int = 0, causal: bool = False,
                 boundaries=None) -> torch.Tensor:
    """[heads, n]: the share of DENSE attention each query puts outside its own window.

    dense_lse is dense attention's per-query log-sum-exp [heads, n] (explorer.attention_stats):
    the share inside is exp(lse over the window - dense lse), so no n x n pass is needed.
    """
    q, k, _ = check_qkv(q, k)
    heads, n, _ = q.shape
    starts = make_starts(n, segment_length, boundaries, q.device)
    lo, hi = windows(starts, n, overlap)
    engine = SpanAttention(q, k, k, lo, hi, causal, [])
    inside = engine.logsumexp(row_chunk(n, heads, int(segments.sizes(starts, n).max()) + overlap, 0, q.device))
    return (1 - torch.exp(inside - dense_lse.to(inside.device))).clamp_min(0)

