"""Fidelity of a mechanism against dense attention, streamed over query chunks.

Per query row: relative output error, total-variation distance between the
two attention rows, recall of dense's top-k keys, the share of dense mass on
keys the mechanism can reach, and the entropy change. Long sequences are
measured on an evenly spaced sample of rows (`max_rows`), never n x n at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer import attention
from explorer.mechanisms.base import Result


@dataclass
class Fidelity:
    rows: torch.Tensor  # [m] query positions measured
    rel_error: torch.Tensor  # [heads, m] |o_mech - o_dense| / |o_dense|
    tv: torch.Tensor  # [heads, m] 0.5 * sum |w_mech - w_dense|
    recall: torch.Tensor  # [heads, m] share of dense top-k keys in mechanism top-k
    reach_mass: torch.Tensor  # [heads, m] dense mass on reachable keys
    entropy_delta: torch.Tensor  # [heads, m] H(mech) - H(dense), nats (|w| normalised)

    METRICS = ("rel_error", "tv", "recall", "reach_mass", "entropy_delta")

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, median and worst decile of each metric over all measured rows."""
        out = {}
        for name in self.METRICS:
            x = getattr(self, name).flatten().float()
            worse_high = name in ("rel_error", "tv", "entropy_delta")
            worst = torch.quantile(x, 0.9 if worse_high else 0.1)
            out[name] = {"mean": float(x.mean()), "median": float(x.median()), "worst_decile": float(worst)}
        return out


def sample_rows(n: int, max_rows: int) -> torch.Tensor:
    """All rows when they fit, else max_rows evenly spaced ones (first and last included)."""
    if n <= max_rows:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_rows).round().long().unique()


def _entropy(w: torch.Tensor) -> torch.Tensor:
    p = w.abs() / w.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def fidelity(q, k, v, res: Result, causal: bool = False, topk: int = 8,
             max_rows: int = 4096, chunk: int = 256) -> Fidelity:
    """Compare `res` with exact attention on a row sample, chunk rows at a time."""
    heads, n, _ = q.shape
    rows = sample_rows(n, max_rows).to(q.device)
    kk = min(topk, n)
    parts = {name: [] for name in Fidelity.METRICS}
    for start in range(0, rows.numel(), chunk):
        block = rows[start : start + chunk]
        dense = attention.weights(q, k, block, causal)
        mech = res.weights(block)
        o_dense, o_mech = dense @ v, res.output[:, block]
        parts["rel_error"].append((o_mech - o_dense).norm(dim=-1) / o_dense.norm(dim=-1).clamp_min(1e-12))
        parts["tv"].append(0.5 * (mech - dense).abs().sum(-1))
        top_dense = dense.topk(kk, dim=-1).indices
        top_mech = mech.topk(kk, dim=-1).indices
        hits = (top_dense[..., :, None] == top_mech[..., None, :]).any(-1).float().mean(-1)
        parts["recall"].append(hits)
        parts["reach_mass"].append((dense * res.reach(block)).sum(-1))
        parts["entropy_delta"].append(_entropy(mech) - _entropy(dense))
    cat = {name: torch.cat(vals, dim=1).cpu() for name, vals in parts.items()}
    return Fidelity(rows=rows.cpu(), **cat)
