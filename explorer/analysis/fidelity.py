"""Fidelity of a mechanism against dense attention, streamed over query chunks.

Per query row: relative output error, total-variation distance between the
two attention rows, recall of dense's top-k keys, the share of dense mass on
keys the mechanism can reach, and the entropy change. Long sequences are
measured on an evenly spaced sample of rows (`max_rows`), never n x n at once.

The reference is unmasked unless told: on a causal model's Doc pass
causal=doc.causal (and run the mechanism with causal=True where it has the
parameter), or the comparison is against attention the model never computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core import attention
from explorer.core.checks import check_qkv
from explorer.core.rows import sample_rows
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


def weights_entropy(w: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of weights taken as |w| normalised: low-rank weights can be negative."""
    p = w.abs() / w.abs().sum(-1, keepdim=True).clamp_min(1e-30)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def fidelities(q, k, v, results: dict[str, Result], causal: bool = False, topk: int = 8,
               max_rows: int = 4096, chunk: int = 256) -> dict[str, Fidelity]:
    """Compare several results with exact attention on one row sample; dense rows are computed once per chunk."""
    q, k, v = check_qkv(q, k, v)
    heads, n, _ = q.shape
    rows = sample_rows(n, max_rows).to(q.device)
    kk = min(topk, n)
    parts = {name: {metric: [] for metric in Fidelity.METRICS} for name in results}
    for start in range(0, rows.numel(), chunk):
        block = rows[start : start + chunk]
        dense = attention.weights(q, k, block, causal)
        o_dense, top_dense, h_dense = dense @ v, dense.topk(kk, dim=-1).indices, weights_entropy(dense)
        for name, res in results.items():
            mech, part = res.weights(block), parts[name]
            part["rel_error"].append((res.output[:, block] - o_dense).norm(dim=-1)
                                     / o_dense.norm(dim=-1).clamp_min(1e-12))
            part["tv"].append(0.5 * (mech - dense).abs().sum(-1))
            top_mech = mech.topk(kk, dim=-1).indices
            part["recall"].append((top_dense[..., :, None] == top_mech[..., None, :]).any(-1).float().mean(-1))
            part["reach_mass"].append((dense * res.reach(block)).sum(-1))
            part["entropy_delta"].append(weights_entropy(mech) - h_dense)
    return {name: Fidelity(rows=rows.cpu(), **{m: torch.cat(vals, dim=1).cpu() for m, vals in part.items()})
            for name, part in parts.items()}


def fidelity(q, k, v, res: Result, causal: bool = False, topk: int = 8,
             max_rows: int = 4096, chunk: int = 256) -> Fidelity:
    """Compare `res` with exact attention on a row sample, chunk rows at a time.

    causal is not read from anywhere: on a causal Doc pass causal=doc.causal.
    """
    return fidelities(q, k, v, {"": res}, causal, topk, max_rows, chunk)[""]
