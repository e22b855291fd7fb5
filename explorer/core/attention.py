"""Exact softmax attention for a block of query rows: the reference everything is checked against."""
from __future__ import annotations

from typing import Callable

import torch

from explorer.core.checks import as_rows


def scores(q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Scaled scores [heads, len(rows), n] of the listed queries, -inf above the diagonal if causal."""
    s = torch.matmul(q[:, rows], k.transpose(1, 2)) * q.shape[-1] ** -0.5
    if causal:
        keys = torch.arange(k.shape[1], device=k.device)
        s = s.masked_fill(keys[None, None, :] > rows[None, :, None], float("-inf"))
    return s


def weights(q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Softmax attention rows [heads, len(rows), n]."""
    return torch.softmax(scores(q, k, rows, causal), dim=-1)


def model_attention(doc, rows) -> torch.Tensor:
    """[heads, len(rows), n]: the probabilities the model computes for those query rows, by its own
    rule (mask, scaling, soft-cap, sinks: doc.model_rule) over the Doc's q/k. For a text that fits one
    pass this is the model's own attention; over windows, its rule applied to the whole text."""
    return doc.model_rule.weights(doc.q, doc.k, as_rows(rows, doc.n, doc.q.device))


def summed_rows(weights: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[heads, n]: the attention rows of the listed queries summed, for several tokens read together;
    `weights` maps query rows to [heads, len(rows), n] (a model's rule, a mechanism's weights), called
    `chunk` rows at a time: one row pass per query, never the whole matrix."""
    total = None
    for block in rows.split(chunk):
        part = weights(block).sum(1)
        total = part if total is None else total + part
    return total
