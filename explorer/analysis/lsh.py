"""LSH attention's page analyses: chunk windows in one round's sorted order, dense attention
in that order, which of dense's top keys LSH reaches, and recall across re-hashes."""
from __future__ import annotations

import torch

from explorer.analysis.fidelity import fidelity
from explorer.core import attention
from explorer.core.pooling import PooledMap, pooled_map
from explorer.mechanisms.base import Result
from explorer.mechanisms.lsh import MECHANISM


def chunk_starts(chunk_ids: torch.Tensor) -> list[int]:
    """Sorted slots where a new chunk begins, from one [n] row of query_chunk / key_chunk."""
    if chunk_ids.numel() == 0:
        return []
    change = torch.nonzero(chunk_ids[1:] != chunk_ids[:-1]).flatten() + 1
    return [0] + change.tolist()



def chunk_windows(query_chunk: torch.Tensor, key_chunk: torch.Tensor, n_chunks: int) -> list[tuple[int, int, int, int]]:
    """(q0, q1, k0, k1) boxes in one round's sorted slots: each chunk's queries and the keys they see.

    query_chunk, key_chunk: one [n] row of the structure. The previous chunk is
    taken cyclically; when it lies in another round it is outside this round's
    matrix, and when it wraps to the end of this round it gets its own box.
    """
    q_span, k_span = _spans(query_chunk.tolist()), _spans(key_chunk.tolist())
    boxes = []
    for c, (q0, q1) in q_span.items():
        seen = sorted(k_span[x] for x in {(c - 1) % n_chunks, c} if x in k_span)
        if len(seen) == 2 and seen[0][1] == seen[1][0]:
            seen = [(seen[0][0], seen[1][1])]
        boxes += [(q0, q1, k0, k1) for k0, k1 in seen]
    return boxes


def _spans(ids: list[int]) -> dict[int, tuple[int, int]]:
    """Contiguous [start, stop) of each value in a non-decreasing list."""
    out: dict[int, tuple[int, int]] = {}
    for i, c in enumerate(ids):
        out[c] = (out[c][0], i + 1) if c in out else (i, i + 1)
    return out


def sorted_dense_map(q, k, perm: torch.Tensor, key_perm: torch.Tensor, causal: bool,
                     rows: tuple[int, int], cols: tuple[int, int], grid: int, per_bin: int | None = 4) -> PooledMap:
    """Dense attention of one head ([1, n, d]) with queries and keys in a round's sorted order, pooled."""
    perm, key_perm = perm.to(q.device), key_perm.to(q.device)

    def fn(slots):
        return attention.weights(q, k, perm[slots], causal)[:, :, key_perm]

    return pooled_map(fn, q.shape[0], q.shape[1], rows=rows, cols=cols, grid=grid, per_bin=per_bin, device=q.device)


def topk_caught(res: Result, top_index: torch.Tensor, rows: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Bool [heads, len(rows), k]: whether LSH can reach each of dense's top-k keys of those queries."""
    parts = []
    for block in rows.split(chunk):
        index = top_index[:, block.cpu()].to(res.output.device)
        parts.append(res.reach(block).gather(2, index).cpu())
    return torch.cat(parts, dim=1)


def seed_recall(q, k, v, params: dict, seeds, causal: bool, max_rows: int = 512, progress=None) -> dict:
    """Re-hash with each seed: mean top-k recall and reachable dense mass per seed ([seeds] each).

    Measured with explorer.analysis.fidelity.fidelity on max_rows evenly spaced queries.
    """
    seeds = list(seeds)
    recall, reach = [], []
    for i, seed in enumerate(seeds):
        res = MECHANISM.run(q, k, v, **{**params, "seed": int(seed)})
        fid = fidelity(q, k, v, res, causal=causal, max_rows=max_rows)
        recall.append(float(fid.recall.mean()))
        reach.append(float(fid.reach_mass.mean()))
        if progress is not None:
            progress(i + 1, len(seeds))
    return {"seed": seeds, "recall": torch.tensor(recall), "reach_mass": torch.tensor(reach)}

