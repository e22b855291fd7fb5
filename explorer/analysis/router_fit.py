"""Fit the routing mechanism's router W_r so that the routed output matches dense attention.

A short Adam optimization on a sample of query rows: the paths run once on the
whole text, then only the router changes. The loss is the relative squared
error of the routed output against dense, sum |o - o_dense|^2 / sum |o_dense|^2
over the sampled rows and all heads, optionally plus `cost_weight` times the
expected relative cost of the chosen paths (path flops / dense flops), so a
router can be asked to prefer cheap paths. It starts from the mechanism's
seeded router, so the first loss is that of the unfitted router.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core import attention
from explorer.core.checks import check_qkv
from explorer.core.device import synchronize
from explorer.core.rows import sample_rows
from explorer.mechanisms import REGISTRY, routing
from explorer.mechanisms.base import dense_cost


@dataclass
class RouterFit:
    router: torch.Tensor  # [heads, head_dim, P], pass as routing's `router` param
    losses: list[float]  # loss before each step, then the final one
    seconds: float  # paths + optimization, wall clock
    paths: list[str]
    rows: torch.Tensor  # the sampled query rows the loss is measured on

    @property
    def initial_loss(self) -> float:
        return self.losses[0]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]


def dense_rows(q, k, v, rows: torch.Tensor, causal: bool, chunk: int = 256) -> torch.Tensor:
    """Exact attention output of the sampled rows [heads, len(rows), dv]."""
    return torch.cat([attention.weights(q, k, rows[i : i + chunk], causal) @ v for i in range(0, len(rows), chunk)], 1)


def routed_loss(x, router, outs, target, rel_cost, cost_weight: float) -> torch.Tensor:
    """Relative squared error of the mix (plus the weighted expected cost)."""
    r = torch.softmax(torch.matmul(x, router), -1)  # [heads, m, P]
    pred = (r[..., None] * outs).sum(-2)
    loss = ((pred - target) ** 2).sum() / (target**2).sum().clamp_min(1e-30)
    return loss + cost_weight * (r * rel_cost).sum(-1).mean() if cost_weight else loss


def fit_router(q, k, v, steps: int = 200, lr: float = 0.05, sample: int = 512, cost_weight: float = 0.0,
               progress: Callable[[int, int], None] | None = None, **params) -> RouterFit:
    """Fit W_r for routing with `params` (its other params; mode is router) on `sample` rows.

    progress(steps done, steps) is told after every Adam step."""
    q, k, v = check_qkv(q, k, v)
    for name, value, low in (("steps", steps, 1), ("sample", sample, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"router_fit: {name}={value!r} must be an integer >= {low}")
    for name, value in (("lr", lr), ("cost_weight", cost_weight)):
        if not isinstance(value, (int, float)) or value < 0 or (name == "lr" and value == 0):
            raise ValueError(f"router_fit: {name}={value!r} must be a number {'> 0' if name == 'lr' else '>= 0'}")
    values = REGISTRY["routing"].validate({**params, "mode": "router"})
    heads, n, d = q.shape
    start = time.perf_counter()
    with torch.no_grad():
        names, results = routing.run_paths(q, k, v, values)
        init = (routing.seeded_router(heads, d, len(names), values["seed"], q.device) if values["router"] is None
                else routing.check_router(values["router"], heads, d, names, q.device))
        rows = sample_rows(n, sample).to(q.device)
        outs = torch.stack([r.output[:, rows].float() for r in results], -2)  # [heads, m, P, dv]
        target = dense_rows(q, k, v, rows, values["causal"]).float()
        dense_flops = dense_cost(heads, n, d, v.shape[2])["flops"]
        rel_cost = torch.tensor([r.cost["flops"] / dense_flops for r in results], device=q.device)
    x = q[:, rows].float()
    router = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([router], lr=lr)
    losses = []
    with torch.enable_grad():
        for step in range(steps):
            opt.zero_grad()
            loss = routed_loss(x, router, outs, target, rel_cost, cost_weight)
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
            if progress:
                progress(step + 1, steps)
        with torch.no_grad():
            losses.append(float(routed_loss(x, router, outs, target, rel_cost, cost_weight)))
    synchronize(q.device)
    return RouterFit(router.detach(), losses, time.perf_counter() - start, names, rows.cpu())
