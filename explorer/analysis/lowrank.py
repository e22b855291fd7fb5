"""Low-rank attention's page analysis: how far effective weights are from a distribution."""
from __future__ import annotations

import torch

from explorer.mechanisms.base import Result


def signed_mass(res: Result, rows: torch.Tensor) -> dict[str, float]:
    """How far effective weights are from a distribution, on the given query rows.

    negative_share: share of sum |w| carried by negative weights (0 for softmax
    attention); row_sum_min/max: the extremes of sum_j w_ij (1 for softmax).
    """
    w = res.weights(rows)
    total = w.abs().sum().clamp_min(1e-30)
    sums = w.sum(-1)
    return {"negative_share": float(w.clamp_max(0).abs().sum() / total),
            "row_sum_min": float(sums.min()), "row_sum_max": float(sums.max())}

