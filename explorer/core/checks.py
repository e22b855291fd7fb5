"""Checks of what enters the library: query/key/value tensors and query row indices."""
from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Shapes [heads, n, head_dim], one n, one head count, float values."""
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


def as_rows(rows, n: int, device) -> torch.Tensor:
    """Validate query row indices and return them as a 1-D LongTensor."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"rows must lie in 0..{n - 1}, got {int(rows.min())}..{int(rows.max())}")
    return rows
