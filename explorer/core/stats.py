"""Dense attention statistics from one streamed pass over query chunks.

Memory stays O(n * head_dim + chunk * n): the n x n matrix is never formed.
Everything the overview shows comes from this one pass: per-query
log-sum-exp, entropy, max weight, top-k keys, a pooled map and the output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.core.attention import scores
from explorer.core.checks import check_qkv
from explorer.core.device import chunk_rows, synchronize
from explorer.core.pooling import MapAccumulator, PooledMap
from explorer.core.rows import row_chunks


@dataclass
class AttentionStats:
    lse: torch.Tensor  # [heads, n] log-sum-exp of the scaled scores
    entropy: torch.Tensor  # [heads, n] nats
    max_weight: torch.Tensor  # [heads, n]
    topk_index: torch.Tensor  # [heads, n, k]
    topk_weight: torch.Tensor  # [heads, n, k]
    map: PooledMap  # whole sequence at display resolution
    output: torch.Tensor  # [heads, n, head_dim]
    seconds: float
    chunk: int


def attention_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                grid: int = 256, topk: int = 8, chunk: int | None = None, progress=None) -> AttentionStats:
    """One pass over query chunks; `chunk` defaults to what the device's memory allows.

    progress, if given, is called with (rows done, n) after every chunk.
    """
    q, k, v = check_qkv(q, k, v)
    if grid < 1 or topk < 1:
        raise ValueError(f"grid and topk must be at least 1, got grid={grid}, topk={topk}")
    heads, n, _ = q.shape
    chunk = chunk or chunk_rows(n, heads, q.device)
    start = time.perf_counter()
    kk = min(topk, n)
    lse = torch.empty(heads, n, device=q.device)
    entropy, peak = torch.empty_like(lse), torch.empty_like(lse)
    top_i = torch.empty(heads, n, kk, dtype=torch.long, device=q.device)
    top_w = torch.empty(heads, n, kk, device=q.device)
    out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
    acc = MapAccumulator(heads, (0, n), (0, n), grid, q.device)
    with torch.no_grad():
        for rows in row_chunks(n, chunk, q.device):
            s = scores(q, k, rows, causal)
            top = s.amax(-1, keepdim=True)
            s.sub_(top)  # in place: one score-sized buffer for s, one for p
            p = torch.exp(s)
            z = p.sum(-1, keepdim=True)
            p.div_(z)
            lse[:, rows] = (top + z.log()).squeeze(-1)
            # entropy = log z - sum p * (s - max); masked keys give 0 * -inf, which is 0 here
            dot = torch.matmul(p.unsqueeze(-2), s.nan_to_num_(neginf=0.0).unsqueeze(-1) if causal else s.unsqueeze(-1))
            entropy[:, rows] = z.log().squeeze(-1) - dot.squeeze(-1).squeeze(-1)
            top_w[:, rows], top_i[:, rows] = torch.topk(p, kk, dim=-1)
            peak[:, rows] = top_w[:, rows, 0]
            out[:, rows] = torch.matmul(p, v)
            acc.add(rows, p)
            if progress:
                progress(int(rows[-1]) + 1, n)
    synchronize(q.device)
    return AttentionStats(lse.cpu(), entropy.clamp_min(0).cpu(), peak.cpu(), top_i.cpu(), top_w.cpu(),
                      acc.result(), out, time.perf_counter() - start, chunk)
