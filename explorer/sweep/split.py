"""One long text's exact statistics across Ray workers: its query rows cut into parts
(explorer.core.split), each part's statistics pass a Ray task, the parts merged into the
AttentionStats of one pass. q, k, v go to Ray's object store once, and every task reads them there.
"""
from __future__ import annotations

import torch

from explorer.core.split import merge_stats, split_rows
from explorer.core.stats import AttentionStats, attention_stats
from explorer.sweep.engines import connect


def _part(q, k, v, rows, options):
    return attention_stats(q, k, v, rows=rows, **options)


def split_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, parts: int, rows=None,
                address: str | None = None, **options) -> AttentionStats:
    """attention_stats(q, k, v, rows=rows, **options) computed as `parts` Ray tasks (rows default:
    every row); equal to the one pass. Options: causal, grid, topk, rule (e.g. doc.model_rule)."""
    ray = connect(address)
    task = ray.remote(_part)
    shared = [ray.put(x) for x in (q, k, v)]
    done = [task.remote(*shared, part, options) for part in split_rows(q.shape[1], parts, rows)]
    return merge_stats(ray.get(done))
