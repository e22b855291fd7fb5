"""Hierarchical attention: tokens -> chunks -> (super-chunks ->) document, one exact softmax.

Level 0 is the tokens, level 1 the chunks (fixed `chunk_length`, or explicit
`boundaries` such as sentences or paragraphs from explorer.core.segments), and with
`branching` b >= 2 every further level groups b consecutive nodes of the level
below, until one node, the document, remains (b = 0: chunks, then directly the
document). Each node has its own key and value: the mean of its tokens'.

Aggregation (H-Transformer-1D's hierarchical-matrix form, Zhu & Soricut 2021):
the keys a query i sees are partitioned exactly once, finest near the query -
(a) the tokens of its own chunk, at level 0;
(b) at each level l >= 1, the SIBLINGS of its level-l ancestor A_l(i) (the other
    children of A_l's parent), each as one node; the document itself is never a
    key, since its children already cover everything.
All reachable tokens and nodes share ONE softmax. A node J scores
q_l(i) . mean(k_J) / sqrt(d) + log|J|: the log-size term makes J stand for |J|
keys that all score like its mean (the piecewise-constant block of the
hierarchical matrix), so the normaliser is the log-sum-exp merge of the levels
and is exact for the blocks' approximation. J's mass p_J is spread uniformly,
p_J / |J| on each of its tokens, so weights(rows) @ v equals the output.

q_l(i), the query at level l: with `pool_queries` (H-Transformer-1D, which
coarsens Q as well as K, V) the mean query of A_l(i); under `causal` that mean
runs only over A_l(i)'s tokens up to i (a full mean would leak later tokens);
without `pool_queries`, token i's own query at every level.

Deviation: H-Transformer-1D also keeps the chunks adjacent to a query's block
at fine resolution (its near-field band); here a query sees only its own chunk
at token level and its neighbours through the tree, so every key is covered
exactly once and the levels read off cleanly. `causal` keeps the tokens of the
own chunk up to the query and only the siblings that end before A_l(i) begins.

structure: HierarchicalStructure (the tree's levels, and each level's share of every query's attention).
explorer.analysis.hierarchical.by_level(q, k, v, **params) returns rows -> [heads, parts, rows, n],
what each level puts on the original keys (their sum is `weights`); `level_maps`
pools them over a window for display.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core import segments
from explorer.mechanisms.base import Mechanism, Param, Result, Structure
from explorer.mechanisms.spans import NodeLevel, SpanAttention, make_starts, pooled_nodes, row_chunk, span_cost


@dataclass
class Level:
    """The nodes of one level of the tree, as contiguous token spans."""

    starts: torch.Tensor  # LongTensor [nodes] first token of each node
    ends: torch.Tensor  # LongTensor [nodes] one past its last token
    parent: torch.Tensor  # LongTensor [nodes] its node in the next level up, -1 at the document


@dataclass
class HierarchicalStructure(Structure):
    """The tree a run built and where each query's attention came from in it."""

    levels: list[Level]  # level 1 (the chunks) up to the document
    level_mass: torch.Tensor  # [heads, parts, n] each query's share from part p (0: own-chunk tokens, l: level l)
    branching: int
    pool_queries: bool
    causal: bool


def tree(chunks: torch.Tensor, branching: int) -> list[torch.Tensor]:
    """Starts of the nodes at level 1 (chunks) up to the document (one node, start 0)."""
    levels = [chunks]
    if branching:
        while levels[-1].numel() > 1:
            levels.append(levels[-1][::branching].contiguous())
    elif chunks.numel() > 1:
        levels.append(chunks[:1])
    return levels


def parents(child: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Index of each child node's parent (levels nest: every parent start is a child start)."""
    return torch.searchsorted(parent, child, right=True) - 1


def query_fn(q, starts, ids, pool: bool, causal: bool, prefix) -> Callable[[torch.Tensor], torch.Tensor]:
    """The query a token uses at one level: its own, its node's mean, or the causal running mean."""
    if not pool:
        return lambda rows: q[:, rows]
    if not causal:
        mean = segments.pool_mean(q, starts)
        return lambda rows: mean[:, ids[rows]]

    def running(rows):
        first = starts[ids[rows]]
        total = prefix()[:, rows + 1] - prefix()[:, first]
        return (total / (rows - first + 1).to(total.dtype)[None, :, None]).to(q.dtype)

    return running


def cumulative(q):
    """Prefix sums of q along tokens, [heads, n + 1, d], in float64 where the device has it."""
    cache = []

    def get():
        if not cache:
            dtype = torch.float32 if q.device.type == "mps" else torch.float64
            zero = torch.zeros(q.shape[0], 1, q.shape[2], device=q.device, dtype=dtype)
            cache.append(torch.cat([zero, torch.cumsum(q.to(dtype), dim=1)], dim=1))
        return cache[0]

    return get


def node_level(q, k, v, starts, parent_starts, pool: bool, causal: bool, prefix) -> NodeLevel:
    """Nodes at one level; a query reaches the siblings of its own node there."""
    n = k.shape[1]
    ids = segments.ids(starts, n)
    ends = segments.ends(starts, n)
    parent = parents(starts, parent_starts)
    first_child = torch.searchsorted(starts, parent_starts)
    last_child = torch.searchsorted(starts, segments.ends(parent_starts, n))
    key, value, sizes, bias = pooled_nodes(k, v, starts, n, size_weighted=True)

    def allowed(rows):
        own = ids[rows]
        mine = parent[own]
        c0, c1 = int(first_child[mine.min()]), int(last_child[mine.max()])
        nodes = torch.arange(c0, c1, device=k.device)
        ok = (parent[nodes][None] == mine[:, None]) & (nodes[None] != own[:, None])
        if causal:
            ok &= ends[nodes][None] <= starts[own][:, None]
        return c0, c1, ok

    return NodeLevel(starts, sizes, ids, key, value, bias, allowed, query_fn(q, starts, ids, pool, causal, prefix))


class Hierarchical(Mechanism):
    key = "hierarchical"
    title = "Hierarchical attention"
    summary = (
        "A token reads its own chunk token by token; the rest of the text it reads through pooled "
        "nodes - the other chunks of its group, then the other groups, coarser the farther away (a "
        "tree up to the whole document). Everything shares one softmax, and a node's weight is "
        "shared evenly by the tokens it covers.")
    params = (
        Param("chunk_length", 64, 1, None, help="tokens per chunk at level 1 (clamped to n); ignored with boundaries",
              label="Chunk length (tokens)"),
        Param("branching", 0, 0, None, help="0: chunks then the document; b >= 2: b nodes per parent at every level",
              label="Branching (nodes per parent; 0: chunks, then the document)", offered=(0, 2, 3, 4, 8, 16, 32)),
        Param("pool_queries", True, help="coarse levels use the mean query of the token's node (H-Transformer-1D)",
              label="Coarse levels use their node's mean query"),
        Param("causal", False, help="mask later tokens, and nodes that do not end before the query's own",
              label="Causal mask"),
        Param("boundaries", None, help="chunk start token indices (sorted, first 0, < n); overrides chunk_length"),
    )

    def check_together(self, values: dict) -> None:
        if values["branching"] == 1:
            raise ValueError(f"{self.key}: parameter branching=1 must be 0 (no super-chunks) or at least 2")

    def build(self, q, k, v, chunk_length, branching, pool_queries, causal, boundaries):
        """The level starts and the engine computing the merged softmax."""
        n = q.shape[1]
        starts = tree(make_starts(n, chunk_length, boundaries, q.device), branching)
        chunk_ids = segments.ids(starts[0], n)
        lo = starts[0][chunk_ids]
        hi = segments.ends(starts[0], n)[chunk_ids]
        prefix = cumulative(q)
        levels = [node_level(q, k, v, s, p, pool_queries, causal, prefix) for s, p in zip(starts, starts[1:])]
        return starts, SpanAttention(q, k, v, lo, hi, causal, levels)

    def compute(self, q, k, v, **params):
        heads, n, d = q.shape
        starts, engine = self.build(q, k, v, **params)
        nodes = sum(s.numel() for s in starts[:-1])
        chunk_sizes = segments.sizes(starts[0], n)
        out, mass = engine.run(row_chunk(n, heads, int(chunk_sizes.max()), nodes, q.device))
        levels = []
        for s, p in zip(starts, starts[1:] + [None]):
            parent = parents(s, p) if p is not None else torch.full_like(s, -1)
            levels.append(Level(s.cpu(), segments.ends(s, n).cpu(), parent.cpu()))
        structure = HierarchicalStructure(levels, mass.cpu(), params["branching"], params["pool_queries"],
                                          params["causal"])
        cost = span_cost(engine, q, k, v, nodes, levels=len(starts) - 1, pooled_queries=params["pool_queries"])
        return Result(out, engine.weights, structure=structure, cost=cost, reach_fn=engine.reach)


MECHANISM = Hierarchical()
