"""One colour scale for several attention maps: pooling, log or linear, and the range they share.

Attention is heavy-tailed, so maps are drawn in log10 by default, from the top weight down to
the 1st percentile of the positive weights but never more than DECADES below the top: enough
to see weak structure, not so much that float noise fills the picture. Signed effective
weights (Linformer's) get a linear scale centred on zero instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DECADES = 6  # the deepest a log scale reaches below its top
SAMPLE = 100_000  # positive weights the low percentile is taken from (evenly strided)


@dataclass(frozen=True)
class Scale:
    """pool: "mean" or "max"; log: log10 colours; signed: centred on zero; zmin/zmax: the range
    (None lets the figure fit it, as signed maps do around zero)."""

    pool: str
    log: bool
    signed: bool
    zmin: float | None
    zmax: float | None


def log_range(mats: list[torch.Tensor], decades: float = DECADES, percentile: float = 0.01) -> tuple[float, float]:
    """(low, top) in log10 for maps sharing one scale: the top weight and the `percentile` of the
    positive weights, clipped to at most `decades` below the top (-12 when nothing is positive)."""
    positive = torch.cat([m[m > 0].flatten().float() for m in mats]) if mats else torch.zeros(0)
    if not positive.numel():
        return -12.0, 0.0
    top = math.log10(float(positive.max()))
    stride = max(1, positive.numel() // SAMPLE)
    low = float(torch.quantile(positive[::stride], percentile))
    return max(top - decades, math.log10(low)), top


def fit_scale(mats: list[torch.Tensor], pool: str, log: bool, diverging: bool = False) -> Scale:
    """The scale every map of `mats` (one pooling's values) is drawn on."""
    if diverging and any(bool((m < 0).any()) for m in mats):
        return Scale(pool, False, True, None, None)
    if log:
        return Scale(pool, True, False, *log_range(mats))
    top = max((float(m.abs().max()) for m in mats), default=0.0) or 1.0
    return Scale(pool, False, False, 0.0, top)
