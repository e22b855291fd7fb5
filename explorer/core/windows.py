"""Block-sparse attention where consecutive queries share one key window, as one batched kernel.

Segmented attention (a segment and its look-back) and Transformer-XL (a
segment and its memory) are block-diagonal bands: the queries of segment s,
starts[s]..starts[s+1]-1, all see the keys lo[s]..hi[s]-1. Padding every
segment to the longest and every window to the widest turns the band into a
batch of small dense problems that torch's fused SDPA kernel runs at once
(on the CPU its flash kernel, with the padding and the causal edge as a
boolean mask), instead of a Python loop over row chunks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_PADDING = 2.0  # padded pairs per real pair above which the batch is not worth it


def _index(first: torch.Tensor, length: torch.Tensor, width: int, n: int):
    """Positions [S, width] from each first, clamped into 0..n-1, and which are real."""
    offsets = torch.arange(width, device=first.device)
    real = offsets[None] < length[:, None]
    return (first[:, None] + offsets).clamp(0, n - 1), real


def segment_attention(q, k, v, starts: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, causal: bool):
    """Output [heads, n, dv] and the count of (query, key) pairs attended, or None when padding
    the segments to one size would more than double the work (uneven boundaries)."""
    heads, n, _ = q.shape
    length = torch.diff(starts, append=starts.new_tensor([n]))
    span = hi - lo
    longest, widest = int(length.max()), int(span.max())
    if starts.numel() * longest * widest > MAX_PADDING * float((length * span).sum()):
        return None
    q_pos, q_real = _index(starts, length, longest, n)
    k_pos, k_real = _index(lo, span, widest, n)
    mask = k_real[:, None, :].expand(-1, longest, -1)
    if causal:
        mask = mask & (k_pos[:, None, :] <= q_pos[:, :, None])
    qb, kb, vb = q[:, q_pos], k[:, k_pos], v[:, k_pos]  # [heads, S, width, d]
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
    result = out.new_empty(heads, n, v.shape[2])
    result[:, q_pos[q_real]] = out[:, q_real]
    return result, int(mask[q_real].sum())
