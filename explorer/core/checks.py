"""Checks of what enters the library: query/key/value tensors and query row indices."""
from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as the library computes with them, or ValueError saying what is wrong.

    They must be 3-D [heads, n, head_dim] float tensors on one device with one n and one head
    count, no size zero, every value finite. float16 and bfloat16 (or a mix of dtypes) are
    computed in float32: softmax statistics and the mechanisms' own sums lose too much in
    half precision, and several kernels refuse mixed dtypes.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D tensor [heads, n, head_dim]")
        if not t.is_floating_point():
            raise ValueError(f"{name} must hold floating-point values, got {t.dtype}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"q, k, v must share heads and n, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must share head_dim, got {q.shape[2]} and {k.shape[2]}")
    if q.shape[1] < 1:
        raise ValueError("the sequence is empty: n must be at least 1")
    if q.shape[0] < 1 or q.shape[2] < 1 or v.shape[2] < 1:
        raise ValueError(f"heads and head_dim must be at least 1, got q {tuple(q.shape)} and v {tuple(v.shape)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or infinite values")
    dtypes = {q.dtype, k.dtype, v.dtype}
    if len(dtypes) > 1 or dtypes & {torch.float16, torch.bfloat16}:
        return q.float(), k.float(), v.float()
    return q, k, v


def as_rows(rows, n: int, device) -> torch.Tensor:
    """Validate query row indices and return them as a 1-D LongTensor."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"rows must lie in 0..{n - 1}, got {int(rows.min())}..{int(rows.max())}")
    return rows
