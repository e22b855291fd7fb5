"""The fast statistics pass over one block of query rows, with keys laid out by display bin.

The keys are copied once into [key bins, widest bin] slots (a bin one key
short gets a padding slot, whose score the matmul itself makes -inf through one
extra key dimension: 1 in every query, -inf at padding), so every per-bin
reduction the overview needs is a contiguous reshape, not a scatter: the bin
maxima of the scores give the row maximum, the max-pooled map and the top-k
candidates; the bin sums of exp(s - max) give the normaliser and the
mean-pooled map. The output and the expected score (for the entropy,
lse - E_p[s]) come from one matmul with widened values [v | k]. So one score
block, reused from block to block, is read a fixed few times, never n x n.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, replace

import torch

from explorer.core import binreduce
from explorer.core.pooling import bins
from explorer.core.rule import AttentionRule


@dataclass
class BinnedKeys:
    """Keys and widened values [v | k] in bin-major slots; slot b * width + j is key j of bin b."""

    keys_t: torch.Tensor  # [heads, d + 1, slots] keys / sqrt(d), transposed, then the padding row (0 or -inf)
    values: torch.Tensor  # [heads, slots, dv + d] values then keys; 0 at padding
    position: torch.Tensor  # [slots] key index of each slot; n at padding
    padding: torch.Tensor  # [slots] -1 at padding, 0 elsewhere
    key_bin: torch.Tensor  # [n] display bin of each key
    count: int  # key bins
    width: int  # slots per bin

    def buffer(self, heads: int, rows: int) -> torch.Tensor:
        """Room for the scores of `rows` query rows over every slot (see block_scores)."""
        return self.values.new_empty(heads * rows * self.count * self.width)

    def of_heads(self, first: int, stop: int) -> BinnedKeys:
        """The same layout restricted to heads first..stop-1 (views, no copy)."""
        return replace(self, keys_t=self.keys_t[first:stop], values=self.values[first:stop])


def bin_keys(k: torch.Tensor, v: torch.Tensor, grid: int) -> BinnedKeys:
    """Lay k and v out by the display bins of explorer.core.pooling.bins(0, n, grid)."""
    heads, n, d = k.shape
    key_bin, count = bins(0, n, grid, k.device)
    sizes = torch.bincount(key_bin, minlength=count)
    width = int(sizes.max())
    first = torch.cumsum(sizes, 0) - sizes
    slot = key_bin * width + torch.arange(n, device=k.device) - first[key_bin]
    position = torch.full((count * width,), n, dtype=torch.long, device=k.device).index_copy_(
        0, slot, torch.arange(n, device=k.device))
    values = k.new_zeros(heads, count * width, v.shape[2] + d).index_copy_(1, slot, torch.cat([v, k], dim=2))
    is_pad = position == n
    pad_row = torch.zeros(count * width, dtype=k.dtype, device=k.device).masked_fill_(is_pad, float("-inf"))
    keys_t = torch.cat([values[:, :, v.shape[2]:].transpose(1, 2) * d**-0.5, pad_row.expand(heads, 1, -1)], dim=1)
    padding = torch.zeros_like(pad_row).masked_fill_(is_pad, -1.0)
    return BinnedKeys(keys_t, values, position, padding, key_bin, count, width)


def used_bins(keys: BinnedKeys, rows: torch.Tensor, causal: bool, kk: int) -> int:
    """Key bins a block of rows needs: all, or under `causal` those up to its last row,
    and at least enough to hold kk keys, so the top-k has kk real candidates."""
    if not causal:
        return keys.count
    last = max(int(rows.max()), kk - 1)
    return int(keys.key_bin[last]) + 1


def block_scores(q_rows: torch.Tensor, rows: torch.Tensor, keys: BinnedKeys, nb: int, causal: bool,
                 buffer: torch.Tensor, rule: AttentionRule | None = None) -> torch.Tensor:
    """Scaled scores [heads, r, nb * width] over the first nb bins' slots, -inf at padding and masked keys.

    They are written into `buffer` (flat, at least that large), reused block after block:
    a fresh score block per call costs about a third of the matmul in page faults on the CPU.
    A rule's soft-cap, position bias and sliding window apply here (its scale is folded into q by
    the caller); the bias at a padding slot (position n) is finite, so padding stays -inf.
    """
    heads, r, _ = q_rows.shape
    width = nb * keys.width
    s = buffer[: heads * r * width].view(heads, r, width)
    torch.matmul(torch.cat([q_rows, q_rows.new_ones(heads, r, 1)], dim=2), keys.keys_t[:, :, :width], out=s)
    if rule is not None and rule.softcap is not None:
        s.div_(rule.softcap).tanh_().mul_(rule.softcap)  # padding's -inf became -softcap: masked again below
        s.masked_fill_(keys.position[:width] == keys.key_bin.numel(), float("-inf"))
    if rule is not None and rule.bias is not None:
        rule.bias.add_to(s, rows, keys.position[:width])
    if rule is not None and rule.window is not None:
        s.masked_fill_(~rule.allowed(rows, keys.position[:width]), float("-inf"))
    elif causal:
        first = int(keys.key_bin[int(rows.min())]) * keys.width
        later = keys.position[None, first:width] > rows[:, None]
        s[:, :, first:width].masked_fill_(later, float("-inf"))
    return s


@dataclass
class BlockStats:
    """What one block of rows contributes: per-row statistics and its rows' per-key-bin weights."""

    lse: torch.Tensor  # [heads, r]
    entropy: torch.Tensor  # [heads, r]
    max_weight: torch.Tensor  # [heads, r]
    topk_index: torch.Tensor  # [heads, r, kk]
    topk_weight: torch.Tensor  # [heads, r, kk]
    output: torch.Tensor  # [heads, r, dv]
    bin_sum: torch.Tensor  # [heads, r, key bins] weight each row puts on each key bin
    bin_max: torch.Tensor  # [heads, r, key bins] largest single weight in each key bin

    @staticmethod
    def cat(parts: list[BlockStats]) -> BlockStats:
        """Blocks of the same rows for consecutive groups of heads, joined along the heads."""
        if len(parts) == 1:
            return parts[0]
        return BlockStats(*(torch.cat(fields) for fields in zip(*map(astuple, parts))))


def grouped_block_stats(q_rows: torch.Tensor, rows: torch.Tensor, keys: BinnedKeys, causal: bool, kk: int,
                        buffer: torch.Tensor, group: int, rule: AttentionRule | None = None,
                        sinks: torch.Tensor | None = None) -> BlockStats:
    """block_stats for `group` heads at a time: on the CPU one head of 256 rows beats 12 heads of 64
    (the block's matmuls want rows) and keeps one head's scores in memory. sinks: [heads, 1, 1]."""
    heads = q_rows.shape[0]
    return BlockStats.cat([block_stats(q_rows[h : h + group], rows, keys.of_heads(h, h + group), causal, kk, buffer,
                                       None if rule is None else rule.of_heads(h, h + group),
                                       None if sinks is None else sinks[h : h + group])
                           for h in range(0, heads, group)])


def block_stats(q_rows: torch.Tensor, rows: torch.Tensor, keys: BinnedKeys, causal: bool, kk: int,
                buffer: torch.Tensor, rule: AttentionRule | None = None,
                sinks: torch.Tensor | None = None) -> BlockStats:
    """Exact statistics of the listed query rows: two matmuls and four passes over one score block.

    Top-k comes from the kk bins with the largest maxima (each of the true
    top-k lies in a bin whose maximum is at least as large), so only kk bins
    per row are sorted, never the whole row. A soft-capped score is no longer
    q . k, so its expected score comes from the weights themselves (one more
    pass, as is a score with a position bias); a sink adds its exp to the normaliser and its share
    to the entropy.
    """
    heads, r, d = q_rows.shape
    nb = used_bins(keys, rows, causal, kk)
    s = block_scores(q_rows, rows, keys, nb, causal, buffer, rule)
    cells = s.view(heads, r, nb, keys.width)
    dv = keys.values.shape[2] - d
    compiled = binreduce.available(s, kk)
    if compiled:  # one pass per row in C: s becomes exp(score - row max); sum e log e and the top-k with it
        top_bin, top, bin_sum, spent, slot, top_e = binreduce.bin_reduce(s, nb, keys.width, keys.padding, kk)
        top, spent, top_i = top[..., None], spent[..., None], keys.position[slot]
    else:
        top_bin = cells.amax(-1)
        top = top_bin.amax(-1, keepdim=True)
        s.sub_(top).exp_()  # s now holds exp(score - row max), in place
        bin_sum = cells.sum(-1)
    z = bin_sum.sum(-1, keepdim=True)
    sink = None if sinks is None else torch.exp(sinks - top)
    if sink is not None:
        z = z + sink
    values = keys.values[:, : nb * keys.width, : dv if compiled else None]  # the eager entropy needs [v | k]
    mixed = torch.matmul(s, values) / z
    lse = (top + z.log()).squeeze(-1)
    if compiled or (rule is not None and (not rule.dot_scores or sink is not None)):
        if not compiled:
            spent = torch.special.xlogy(s, s).sum(-1, keepdim=True)  # sum e log e, e = exp(score - max)
        if sink is not None:
            spent = spent + torch.special.xlogy(sink, sink)
        entropy = (z.log() - spent / z).squeeze(-1)  # -sum p log p with p = e / z
    else:
        entropy = lse - (q_rows * mixed[..., dv:]).sum(-1) * d**-0.5
    if not compiled:
        top_i, top_e = topk_from_bins(cells, top_bin, keys, kk)
    peak = torch.exp(top_bin - top) / z
    return BlockStats(lse, entropy.clamp_min(0), (1 / z).squeeze(-1), top_i, top_e / z,
                      mixed[..., :dv].to(q_rows.dtype), all_bins(bin_sum / z, keys), all_bins(peak, keys))


def all_bins(x: torch.Tensor, keys: BinnedKeys) -> torch.Tensor:
    """Per-bin weights of the bins used, with 0 for the bins after them (wholly masked under `causal`)."""
    missing = keys.count - x.shape[-1]
    return torch.nn.functional.pad(x, (0, missing)) if missing else x


def topk_from_bins(cells: torch.Tensor, top_bin: torch.Tensor, keys: BinnedKeys, kk: int):
    """Key indices and exp-weights of each row's kk largest, from its kk best bins."""
    heads, r, nb, width = cells.shape
    picked = top_bin.topk(min(kk, nb), dim=-1).indices
    slots = (picked[..., None] * width + torch.arange(width, device=cells.device)).flatten(2)
    candidates = cells.view(heads, r, -1).gather(2, slots)
    candidates += keys.padding[slots]  # -1 at padding, below any weight: padding is never chosen
    values, where = candidates.topk(kk, dim=-1)
    return keys.position[slots.gather(2, where)], values
