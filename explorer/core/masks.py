"""Attention masks as pure functions of (query index, key index) tensors.

A mask here has FlexAttention's mask_mod signature, mask(batch, head, q_idx,
kv_idx) -> bool tensor, built from broadcasting index arithmetic only, so the
same function gives a flex BlockMask (`block_mask`) and the exact boolean rows
a mechanism's weights(rows) needs (`dense_mask`).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sink_window(sinks: int, window: int) -> MaskMod:
    """StreamingLLM (Xiao et al. 2023): the first `sinks` tokens and the last `window` tokens
    up to and including the query itself."""
    if sinks < 0 or window < 1:
        raise ValueError(f"sink_window needs sinks >= 0 and window >= 1, got sinks={sinks}, window={window}")

    def mask(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & ((kv_idx < sinks) | (q_idx - kv_idx < window))

    return mask


def key_window(lo: torch.Tensor, hi: torch.Tensor, causal: bool) -> MaskMod:
    """Each query i sees the keys lo[i] <= j < hi[i] (and j <= i under `causal`):
    segmented attention with its look-back, and Transformer-XL's segment plus memory."""
    def mask(b, h, q_idx, kv_idx):
        ok = (kv_idx >= lo[q_idx]) & (kv_idx < hi[q_idx])
        return ok & (kv_idx <= q_idx) if causal else ok

    return mask


def dense_mask(mask: MaskMod, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean [len(rows), n]: which keys each listed query may attend to."""
    return mask_rows(mask, rows, torch.arange(n, device=rows.device))


def mask_rows(mask: MaskMod, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Boolean [len(rows), len(keys)]: which of the listed keys (indices) each listed query may attend to."""
    zero = torch.zeros((), dtype=torch.long, device=rows.device)
    return mask(zero, zero, rows[:, None], keys[None, :]).expand(rows.numel(), keys.numel())


def block_mask(mask: MaskMod, n: int, device, block: int = 128, q_len: int | None = None):
    """FlexAttention's BlockMask of `mask` over n queries (or q_len) and n keys (blocks wholly masked are skipped).

    Built by a compiled create_block_mask, kept for the process: at n = 16k on
    the CPU 0.3 to 0.6 s once warm, against 11 to 16 s evaluating the n x n
    mask eagerly; the first call, a new n and new integer settings recompile
    (3 to 12 s each, measured) until the shapes go dynamic.
    """
    return _create_block_mask()(mask, B=None, H=None, Q_LEN=q_len or n, KV_LEN=n, device=device, BLOCK_SIZE=block)


@functools.cache
def _create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)
