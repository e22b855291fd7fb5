"""Position biases a layer adds to its scores inside the layer: ALiBi (Bloom, Falcon) and learned
relative-position buckets (MPNet, T5's bucketing), as part of an AttentionRule.

A bias is a function of (query index, key index) per head, evaluated for one block of rows
and keys at a time (`add_to`), never as an n x n matrix. It is a frozen value (slopes, a
table of numbers), so a rule stays comparable and hashable.

ALiBi is added here in the form the model computes it: slope x position per key, rounded as
the model rounds it, minus the same for the query (a constant per row, so the weights are the
model's and a score at distance 0 is unbiased). Over a text longer than one pass, positions
are the Doc's own, so a pair of tokens gets the bias of their distance in the text.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch


def relative_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                    max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of each relative position (key position - query position), as T5 and MPNet compute it.

    Half of the buckets (per direction when bidirectional) hold one distance each; the rest
    cover distances up to max_distance on a log scale, and everything farther shares the last
    bucket. One-sided (bidirectional=False) folds keys after the query into bucket 0. The
    float32 arithmetic is the models' own, so that boundaries land exactly where theirs do.
    """
    rel = torch.as_tensor(relative_position).long()
    if bidirectional:
        num_buckets //= 2
        offset = (rel > 0).long() * num_buckets
        dist = rel.abs()
    else:
        offset = torch.zeros_like(rel)
        dist = (-rel).clamp_min(0)
    exact = num_buckets // 2
    ratio = dist.float().clamp_min(exact) / exact  # clamp only avoids log(0) in unused entries
    spread = torch.log(ratio) / math.log(max_distance / exact) * (num_buckets - exact)
    far = (exact + spread.long()).clamp_max(num_buckets - 1)
    return offset + torch.where(dist < exact, dist, far)


@functools.lru_cache(maxsize=16)
def bucket_reach(bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """The smallest |distance| from which every farther one falls in its side's last bucket."""
    d = torch.arange(max_distance + 2)
    reach = 0
    for side in (d, -d):
        buckets = relative_bucket(side, bidirectional, num_buckets, max_distance)
        differ = (buckets != buckets[-1]).nonzero()
        reach = max(reach, int(differ[-1]) + 1 if differ.numel() else 0)
    return reach


@dataclass(frozen=True)
class ALiBi:
    """Press et al. 2022: scale * slope_h * (key position - query position), one slope per head.

    `precision`: the dtype the model computes slope x position in, slope and position rounded to it
    first (Falcon builds its ALiBi in bfloat16, so past 256 tokens positions move in steps; Bloom in
    float32), so that the bias is the model's to the bit.
    """

    slopes: tuple[float, ...]
    scale: float = 1.0  # Falcon divides the bias by sqrt(head_dim) with the scores; Bloom adds it as is
    precision: str = "float32"

    @property
    def heads(self) -> int:
        return len(self.slopes)

    def of_heads(self, first: int, stop: int) -> ALiBi:
        return replace(self, slopes=self.slopes[first:stop])

    def position_term(self, positions: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """[heads, len(positions)]: slope x position as the model computes it, before `scale`."""
        precision = getattr(torch, self.precision)
        slopes = torch.tensor(self.slopes, dtype=torch.float32, device=positions.device).to(precision)
        return (slopes[:, None] * positions.to(precision)[None, :]).to(dtype)

    def add_to(self, scores: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """scores [heads, len(rows), len(keys)] plus the bias, in place (two broadcast adds)."""
        scores.add_(self.position_term(keys, scores.dtype)[:, None, :], alpha=self.scale)
        return scores.sub_(self.position_term(rows, scores.dtype)[:, :, None], alpha=self.scale)

    def describe(self) -> str:
        low, high = min(self.slopes), max(self.slopes)
        slopes = f"slope {high:.3g}" if low == high else f"slopes {high:.3g} to {low:.3g}"
        return f"ALiBi position bias with {slopes} per token of distance"


@dataclass(frozen=True)
class RelativeBuckets:
    """A learned number per head for each bucket of key position - query position (T5, MPNet):
    `table[h][bucket]`, buckets by `relative_bucket`."""

    table: tuple[tuple[float, ...], ...]  # [heads][num_buckets]
    max_distance: int = 128
    bidirectional: bool = True
    source: str = ""  # whose table, for words: "MPNet"

    @property
    def heads(self) -> int:
        return len(self.table)

    @property
    def num_buckets(self) -> int:
        return len(self.table[0])

    def of_heads(self, first: int, stop: int) -> RelativeBuckets:
        return replace(self, table=self.table[first:stop])

    def values(self, distances: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """[heads, *distances.shape]: the bias at each key position - query position."""
        table = torch.tensor(self.table, dtype=dtype, device=distances.device)
        return table[:, relative_bucket(distances, self.bidirectional, self.num_buckets, self.max_distance)]

    @property
    def reach(self) -> int:
        """The distance from which every farther key, before or after the query, is in the last bucket
        of its side: beyond it the bias is one value per side."""
        return bucket_reach(self.bidirectional, self.num_buckets, self.max_distance)

    def add_to(self, scores: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """scores [heads, len(rows), len(keys)] plus the bias, in place. Keys lie in about the order of
        their positions (an arange, or the binned pass's slots): those from the first near one to the last
        (within `reach` of the block's rows) are looked up by distance; every other key is as far as the
        last bucket of its side from every row, one value per key, added as ALiBi's is (a broadcast)."""
        reach, first, last = self.reach, int(rows.min()), int(rows.max())
        near = ((keys > first - reach) & (keys < last + reach)).nonzero()
        lo, hi = (int(near[0]), int(near[-1]) + 1) if near.numel() else (0, 0)
        far = self.values(torch.tensor([-reach, reach], device=keys.device), scores.dtype)  # [heads, 2]
        for part in (slice(0, lo), slice(hi, None)):
            scores[:, :, part].add_(torch.where(keys[part] > last, far[:, 1:], far[:, :1])[:, None, :])
        if hi > lo:
            band = keys[lo:hi]
            low, high = max(-reach, int(band.min()) - last), min(reach, int(band.max()) - first)
            by_distance = self.values(torch.arange(low, high + 1, device=keys.device), scores.dtype)
            scores[:, :, lo:hi].add_(by_distance[:, (band[None, :] - rows[:, None]).clamp_(low, high) - low])
        return scores

    def describe(self) -> str:
        whose = f"{self.source}'s " if self.source else ""
        return (f"{whose}learned relative-position bias in {self.num_buckets} distance buckets "
                f"up to {self.max_distance:,} tokens")


PositionBias = ALiBi | RelativeBuckets
