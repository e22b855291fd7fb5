"""Checks of what enters the library: query/key/value tensors and query row indices."""
from __future__ import annotations

import math

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None):
    """q, k, v (v None where an entry point takes only q and k) as the library computes with them,
    or ValueError saying what is wrong.

    They must be 3-D [heads, n, head_dim] float tensors on one device with one n and one head
    count, no size zero, every value finite, and q, k small enough that their scores fit.
    Every entry point computes in float32 or the input's higher precision: float64 when every
    tensor given is float64, else float32. float16 and bfloat16 (or a mix of dtypes) become
    float32: softmax statistics and the mechanisms' own sums lose too much in half precision,
    and several kernels refuse mixed dtypes.
    """
    given = {"q": q, "k": k} if v is None else {"q": q, "k": k, "v": v}
    for name, t in given.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D tensor [heads, n, head_dim]")
        if not t.is_floating_point():
            raise ValueError(f"{name} must hold floating-point values, got {t.dtype}")
    shapes = [tuple(t.shape) for t in given.values()]
    if len({s[:2] for s in shapes}) > 1:
        raise ValueError(f"{', '.join(given)} must share heads and n, got {', '.join(map(str, shapes))}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must share head_dim, got {q.shape[2]} and {k.shape[2]}")
    if q.shape[1] < 1:
        raise ValueError("the sequence is empty: n must be at least 1")
    if q.shape[0] < 1 or min(s[2] for s in shapes) < 1:
        raise ValueError(f"heads and head_dim must be at least 1, got {' and '.join(map(str, shapes))}")
    if len({t.device for t in given.values()}) > 1:
        raise ValueError(f"{', '.join(given)} must be on one device, got {', '.join(str(t.device) for t in given.values())}")
    for name, t in given.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or infinite values")
    dtype = torch.float64 if all(t.dtype == torch.float64 for t in given.values()) else torch.float32
    given = {name: t.to(dtype) for name, t in given.items()}
    _check_scores_fit(given["q"], given["k"])
    return given["q"], given["k"], given.get("v")


def _check_scores_fit(q: torch.Tensor, k: torch.Tensor) -> None:
    """ValueError when q . k could overflow the dtype: finite inputs would silently give inf or NaN.

    |q . k| <= |q| |k| bounds every score, and the limit leaves room for sums over the n tokens
    (projections, pooled keys). Entries above 1e15 could overflow their squares in the norm:
    then the norm is taken of t / max|t| (a copy only for such inputs).
    """
    def largest_norm(t):
        top = float(torch.linalg.vector_norm(t, ord=math.inf))
        scale = top if top > 1e15 else 1.0
        return float(torch.linalg.vector_norm(t if scale == 1.0 else t / scale, dim=-1).amax()) * scale

    product = largest_norm(q) * largest_norm(k)
    limit = torch.finfo(q.dtype).max / q.shape[1]
    if product > limit:
        raise ValueError(f"q and k are so large that their scores overflow {str(q.dtype).removeprefix('torch.')}: "
                         f"the largest |q|·|k| is {product:.3g}, and sums over the {q.shape[1]:,} tokens must stay "
                         f"under {limit:.3g}; scale them down")


def as_rows(rows, n: int, device) -> torch.Tensor:
    """Validate query row indices and return them as a 1-D LongTensor."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"rows must lie in 0..{n - 1}, got {int(rows.min())}..{int(rows.max())}")
    return rows
