"""Dense attention statistics on fused attention kernels: the output and log-sum-exp come from
the kernel, every other statistic from one score pass that already knows the log-sum-exp.

What each part computes:
- the kernel (`kernel_rows`), one call per block of query rows: the output and the log-sum-exp
  over the text's keys. On the CPU, SDPA's flash kernel (aten._scaled_dot_product_flash_attention_for_cpu,
  which returns the lse; an additive mask for causal row blocks and windows; it takes float64 too);
  on CUDA, FlexAttention compiled, with the rule's mask as a block mask and its soft-cap as a score_mod.
- the score pass (`known_lse_block`), on explorer.core.binned's bin-major key layout: the scores
  once more, with no max subtraction and no weights x values matmul: per (row, display bin) the
  largest score (the max map, the max weight, the top-k candidates) and the sum of exp(s - lse)
  (the mean map), and -sum p log p (the entropy, right under a soft-cap too).
  No fused kernel returns per-bin maxima or sums, and the overview shows both maps, so this pass
  stays; what the kernel saves is the binned pass's row-max subtraction and its [v | k] matmul.
- a learned sink: L = logaddexp(L_text, sink); the output scales by exp(L_text - L), the entropy
  counts the sink's slot.
Falls back to the binned pass (explorer.core.stats.stream_stats) where no kernel fits: a soft-cap
on the CPU (the flash kernel has no score_mod), float64 on an accelerator, MPS, head_dim < 16 on CUDA.

The statistics of a block-sparse mask in ONE kernel call (`masked_stats`: CUDA, FlexAttention with
values [v | k] and return_aux lse and max_scores): output, lse, max weight and the entropy
lse - scale q . E_p[k]; no maps (those need the score pass). `bin_weights`: the mean map's rows
from one flex call with the display bins' one-hot columns as values (no max map: no kernel gives
per-bin maxima). `bin_maps`: both maps' rows and the lse from one flex call per key bin (its lse
and max_scores over that bin's keys). Both are timed in the bench to see what the kernel would
save on CUDA; neither gives top-k (the score pass does, for every row).

Why the app keeps the binned pass, on the CPU and on CUDA (torch 2.13, 2 cores, MiniLM's head at n = 16,386, best
of seven alternated calls; README, Speed): the flash kernel gives output and lse in 0.16 s, as SDPA
does, but the whole fused pass takes 0.60 s against the binned pass's 0.47 s: the score pass the maps
need is the binned pass less one matmul, and the kernel costs more than that matmul. FlexAttention on
the CPU returns no max_scores and, compiled, no lse ("return_lse is not supported yet"). On an H200
(torch 2.11, n = 131,072, 12 heads) the fused pass took 7.2 s against the binned pass's 6.0 s and
SDPA's 1.24 s, for the same reason. What pays on CUDA is masked_stats: block-sparse statistics from
one call, 35x to 95x faster than dense SDPA at n = 65,536.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from explorer.core.binned import (BinnedKeys, BlockStats, all_bins, bin_keys, block_scores, topk_from_bins,
                                  used_bins)
from explorer.core.masks import MaskMod, block_mask
from explorer.core.pooling import bins
from explorer.core.pooling import edges as pooling_edges
from explorer.core.rule import AttentionRule
from explorer.core.stats import StatsAccumulator, check_args, stats_chunk, stream_stats

_FLEX_BLOCK = 128  # FlexAttention's block of query rows


def fused_available(q: torch.Tensor, rule: AttentionRule) -> bool:
    """Whether a fused kernel computes this rule on q's device and dtype (else the binned pass)."""
    device = q.device.type
    if rule.bias is not None:  # neither kernel is given the bias (FlexAttention could take it as a score_mod)
        return False
    if device == "cpu":
        return rule.softcap is None
    return device == "cuda" and q.dtype == torch.float32 and q.shape[-1] >= 16


def stream_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, grid: int = 256,
                 topk: int = 8, rows=None, chunk: int | None = None,
                 rule: AttentionRule | None = None) -> Iterator[tuple[int, StatsAccumulator]]:
    """stream_stats on fused kernels: the same (rows done, accumulator) after every block, the same
    statistics; the binned pass itself where no kernel fits (fused_available)."""
    q, k, v, rows = check_args(q, k, v, grid, topk, rule, rows)
    heads, n, _ = q.shape
    rule = rule or AttentionRule.plain(q.shape[-1], causal)
    if not fused_available(q, rule):
        return stream_stats(q, k, v, grid=grid, topk=topk, rows=rows, chunk=chunk, rule=rule)
    rows_per_block, group = stats_chunk(n, heads, q.device)
    return _blocks(q, k, v, rule, grid, min(topk, n), rows, chunk or rows_per_block, group)


def fused_stats(q, k, v, causal: bool = False, grid: int = 256, topk: int = 8, rows=None, chunk: int | None = None,
                rule: AttentionRule | None = None):
    """attention_stats on fused kernels (see stream_fused): equal to it within float tolerance."""
    for _, acc in stream_fused(q, k, v, causal, grid, topk, rows, chunk, rule):
        pass
    return acc.result()


@torch.no_grad()
def _blocks(q, k, v, rule: AttentionRule, grid: int, kk: int, rows, chunk: int, group: int):
    keys = bin_keys(k, v, grid)
    acc = StatsAccumulator(q, v, rows, grid, kk, chunk)
    buffer = keys.buffer(group, min(chunk, acc.rows.numel()))
    sinks = rule.sink_logits(q.shape[0], q)
    q_bin = q * (rule.scaling * q.shape[-1] ** 0.5)  # the binned layout scales keys by 1/sqrt(d)
    kernel = kernel_rows(q, k, v, rule)
    kernel_block = chunk if q.device.type == "cpu" else acc.rows.numel()  # CUDA: one kernel call for all rows
    for kernel_rows_ in acc.rows.split(kernel_block):
        out, lse = kernel(kernel_rows_)
        if sinks is not None:
            text = lse
            lse = torch.logaddexp(text, sinks[..., 0])
            out = out * torch.exp(text - lse)[..., None]
        for start in range(0, kernel_rows_.numel(), chunk):
            block, part = kernel_rows_[start : start + chunk], slice(start, start + chunk)
            parts = []
            for h in range(0, q.shape[0], group):
                hs = slice(h, h + group)
                parts.append(known_lse_block(q_bin[hs, block], block, keys.of_heads(h, h + group), lse[hs, part],
                                             rule, kk, buffer, None if sinks is None else sinks[hs]))
            stats = BlockStats.cat(parts)
            stats.output = out[:, part].to(v.dtype)
            acc.add(stats)
            yield acc.done, acc


def known_lse_block(q_rows: torch.Tensor, rows: torch.Tensor, keys: BinnedKeys, lse: torch.Tensor,
                    rule: AttentionRule, kk: int, buffer: torch.Tensor, sinks: torch.Tensor | None) -> BlockStats:
    """Every statistic but the output of the listed rows, given their log-sum-exp [heads, r] (sinks
    included): one score block, its bin maxima, exp(s - lse) in place, bin sums and sum p log p.
    q_rows is scaled for the binned layout (rule.scaling * sqrt(d)); output is left empty."""
    heads, r, _ = q_rows.shape
    nb = used_bins(keys, rows, rule.causal, kk)
    s = block_scores(q_rows, rows, keys, nb, rule.causal, buffer, rule)
    cells = s.view(heads, r, nb, keys.width)
    top_bin = cells.amax(-1)
    s.sub_(lse[..., None]).exp_()  # the weights themselves
    bin_sum = cells.sum(-1)
    mass = bin_sum.sum(-1)  # 1, or less by the sink's share
    if rule.dot_scores:  # -sum p (s - lse) = lse * mass - q . E_p[k]: a matmul, not a log per weight
        spent = (q_rows * torch.matmul(s, keys.keys_t[:, :-1, : s.shape[-1]].transpose(1, 2))).sum(-1) - lse * mass
    else:
        spent = torch.special.xlogy(s, s).sum(-1)
    if sinks is not None:
        sink = torch.exp(sinks[..., 0] - lse)
        spent = spent + torch.special.xlogy(sink, sink)
    peak = torch.exp(top_bin - lse[..., None])
    top_i, top_w = topk_from_bins(cells, top_bin, keys, kk)
    return BlockStats(lse, (-spent).clamp_min(0), peak.amax(-1), top_i, top_w, lse.new_empty(0),
                      all_bins(bin_sum, keys), all_bins(peak, keys))


def kernel_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rule: AttentionRule):
    """A function of query rows -> (output [heads, r, dv], log-sum-exp [heads, r] over the text's keys,
    no sink) by the rule's scale, mask and soft-cap, from the device's fused kernel."""
    return _flash_cpu(q, k, v, rule) if q.device.type == "cpu" else _flex_rows(q, k, v, rule)


def _flex_rows(q, k, v, rule: AttentionRule):
    """FlexAttention over listed rows: the rule's mask as a block mask, its soft-cap as a score_mod."""
    n = q.shape[1]
    score_mod = None if rule.softcap is None else _softcap(rule.softcap)

    def rows_of(rows):
        every = rows.numel() == n and bool((rows == torch.arange(n, device=rows.device)).all())
        mask = None if not rule.causal and rule.window is None else _rows_mask(rule.mask(), None if every else rows)
        out, lse, _ = flex(q if every else q[:, rows], k, v, mask, score_mod, rule.scaling)
        return out, lse

    return rows_of


def _flash_cpu(q, k, v, rule: AttentionRule):
    """The CPU flash kernel behind SDPA, which takes one head size for q, k and v: the narrower
    side is zero-padded once (same scores), the output cut back; masks are additive, per block."""
    d, dv = q.shape[-1], v.shape[-1]
    width = max(d, dv)
    q_, k_, v_ = (F.pad(x, (0, width - x.shape[-1]))[None] for x in (q, k, v))
    keys = torch.arange(k.shape[1])

    def rows_of(rows):
        mask = None
        if rule.causal or rule.window is not None:
            allowed = rule.allowed(rows, keys)
            mask = torch.zeros(allowed.shape, dtype=q.dtype).masked_fill_(~allowed, float("-inf"))[None, None]
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q_[:, :, rows], k_, v_, 0.0, False, attn_mask=mask, scale=rule.scaling)
        return out[0, :, :, :dv], lse[0]

    return rows_of


def _softcap(cap: float):
    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap

    return score_mod


def _rows_mask(mask: MaskMod, rows: torch.Tensor | None) -> MaskMod:
    """mask over the listed query rows: flex's query i is the text's query rows[i]. The rows are
    padded to whole blocks (with the last), since the kernel evaluates the mask on its padding too."""
    if rows is None:
        return mask
    rows = torch.cat([rows, rows[-1:].expand(-rows.numel() % _FLEX_BLOCK)])

    def of_rows(b, h, q_idx, kv_idx):
        return mask(b, h, rows[q_idx], kv_idx)

    return of_rows


@dataclass
class MaskedStats:
    """What one FlexAttention call gives about every query row of a masked attention."""

    output: torch.Tensor  # [heads, n, dv]
    lse: torch.Tensor  # [heads, n]
    max_weight: torch.Tensor | None  # [heads, n]; None where torch's flex has no max_scores
    entropy: torch.Tensor  # [heads, n] nats


def masked_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskMod | None,
                 scale: float | None = None) -> MaskedStats:
    """Output, log-sum-exp, max weight and entropy of softmax(q . k * scale) under `mask` (a mask_mod:
    segmented, sink + window, a model's local layer) from ONE FlexAttention call on CUDA: values
    [v | k] give the output and E_p[k], the entropy is lse - scale q . E_p[k]; blocks the mask
    empties are skipped. No maps: those need the score pass."""
    _on_cuda(q, "masked_stats")
    d, dv = q.shape[-1], v.shape[-1]
    scale = d**-0.5 if scale is None else scale
    mixed, lse, top = flex(q, k, torch.cat([v, k], dim=-1), mask, None, scale, max_scores=True)
    entropy = lse - (q * mixed[..., dv:]).sum(-1) * scale
    max_weight = None if top is None else torch.exp(top - lse)
    return MaskedStats(mixed[..., :dv], lse, max_weight, entropy.clamp_min(0))


def bin_weights(q: torch.Tensor, k: torch.Tensor, grid: int, mask: MaskMod | None = None,
                scale: float | None = None) -> torch.Tensor:
    """Each row's weight on each display bin [heads, n, key bins] (the mean map before pooling rows)
    from one FlexAttention call on CUDA whose values are the bins' one-hot columns. What a mean map
    from the kernel costs, measured beside the score pass (the max map still needs that pass)."""
    _on_cuda(q, "bin_weights")
    key_bin, count = bins(0, k.shape[1], grid, q.device)
    one_hot = F.one_hot(key_bin, count).to(q.dtype).expand(q.shape[0], -1, -1)
    return flex(q, k, one_hot, mask, None, q.shape[-1] ** -0.5 if scale is None else scale)[0]


def bin_maps(q: torch.Tensor, k: torch.Tensor, grid: int, causal: bool = False,
             scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's log-sum-exp [heads, n] and its weight's sum and maximum per display bin [heads, n,
    key bins] (both maps before pooling rows), from FlexAttention's lse and max_scores, one call per
    key bin over that bin's keys alone: L = logsumexp of the bins' lse, sum = exp(lse_b - L),
    max = exp(max_b - L). No score block in memory; what the maps cost from the kernel on CUDA, timed
    in the bench beside the score pass (top-k is not in it)."""
    _on_cuda(q, "bin_maps")
    from torch.nn.attention import flex_attention as fa

    if not hasattr(fa, "AuxRequest"):
        raise ValueError(f"bin_maps needs FlexAttention's max_scores (torch 2.9 or later), "
                         f"not torch {torch.__version__}")
    heads, n, _ = q.shape
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    start = torch.zeros((), dtype=torch.long, device=q.device)  # a tensor, so that every bin shares one compile

    def causal_from_start(b, h, q_idx, kv_idx):
        return kv_idx + start <= q_idx

    edges = [int(e) for e in pooling_edges(0, n, grid)]
    lse = q.new_empty(heads, n, len(edges) - 1)
    top = torch.empty_like(lse)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        start.fill_(lo)
        values = q.new_zeros(heads, hi - lo, 16)  # flex wants values at least 16 wide; only the aux is used
        _, lse[..., b], top[..., b] = flex(q, k[:, lo:hi], values, causal_from_start if causal else None, None,
                                           scale, max_scores=True)
    total = torch.logsumexp(lse, dim=-1)
    return total, torch.exp(lse - total[..., None]), torch.exp(top - total[..., None])


def _on_cuda(q: torch.Tensor, what: str) -> None:
    if q.device.type != "cuda":
        raise ValueError(f"{what} runs FlexAttention on CUDA; q is on {q.device.type}")


def flex(q, k, v, mask: MaskMod | None, score_mod, scale: float, max_scores: bool = False):
    """Compiled FlexAttention on [heads, n, d] tensors: output, lse and (when asked and this torch
    has it: AuxRequest) the row's max score; the aux API is detected (torch >= 2.9: return_aux,
    before: return_lse)."""
    from torch.nn.attention import flex_attention as fa

    blocks = None if mask is None else block_mask(mask, k.shape[1], q.device, q_len=q.shape[1])
    kernel = _compiled_flex()
    if hasattr(fa, "AuxRequest"):
        out, aux = kernel(q[None], k[None], v[None], score_mod=score_mod, block_mask=blocks, scale=scale,
                          return_aux=fa.AuxRequest(lse=True, max_scores=max_scores))
        return out[0], aux.lse[0], None if aux.max_scores is None else aux.max_scores[0]
    out, lse = kernel(q[None], k[None], v[None], score_mod=score_mod, block_mask=blocks, scale=scale, return_lse=True)
    return out[0], lse[0], None


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)
