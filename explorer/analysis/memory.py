"""Recurrent memory's page analysis: where dense attention falls relative to what each query reaches."""
from __future__ import annotations

import torch

from explorer.core import attention
from explorer.core.checks import check_qkv
from explorer.mechanisms.memory import MemoryStructure

REGIONS = ("older", "compressed", "memory", "segment", "later")


def region_bounds(structure: MemoryStructure, rows: torch.Tensor, n: int) -> torch.Tensor:
    """[len(rows), 6] key positions cutting each query's keys into REGIONS.

    older: before anything in reach; compressed: summarized by slots; memory:
    cached tokens; segment: its own segment (up to the query when causal);
    later: keys after what the query can see.
    """
    rows = rows.cpu()
    seg = rows // structure.segment
    end = rows + 1 if structure.causal else structure.segments[seg, 1]
    cuts = [torch.zeros_like(rows), structure.reach_start[rows], structure.memory[seg, 0],
            structure.segments[seg, 0], end, torch.full_like(rows, n)]
    return torch.stack(cuts, 1)


def dense_mass_by_region(q, k, structure: MemoryStructure, rows: torch.Tensor, causal: bool = False,
                         chunk: int = 256) -> dict[str, torch.Tensor]:
    """Share of dense attention [heads, len(rows)] each query puts on every region, streamed by chunks."""
    q, k, _ = check_qkv(q, k)
    n = q.shape[1]
    cuts = region_bounds(structure, rows, n).to(q.device)
    parts = []
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk].to(q.device)
        w = attention.weights(q, k, block, causal)
        total = torch.nn.functional.pad(w.cumsum(-1), (1, 0))
        at = total.gather(-1, cuts[start : start + chunk][None].expand(w.shape[0], -1, -1))
        parts.append(at.diff(dim=-1).clamp_min(0))
    mass = torch.cat(parts, 1).cpu()
    return {name: mass[..., i] for i, name in enumerate(REGIONS)}

