"""The model's own windows: the attention each forward pass computed, and how much the
restarting positions shape a whole-text map.

A text longer than the model's positions is encoded in overlapping passes, each token's q/k/v
kept from one of them (Doc.passes). Mechanisms run on "the whole text as one sequence"; the
model itself only ever attended inside a pass. With absolute position embeddings the kept q/k
carry window positions, so across passes tokens at one window position look alike and the
whole-text map shows stripes that are positions, not content; position_share measures that.
"""
from __future__ import annotations

import torch

from explorer.core import attention
from explorer.core.device import chunk_rows
from explorer.core.doc import Doc, Passes
from explorer.core.rows import row_chunks, sample_rows
from explorer.mechanisms.base import Result, dense_cost


def _own_passes(doc: Doc, head: int | None) -> tuple[Passes, torch.Tensor, torch.Tensor, torch.Tensor]:
    passes = doc.passes
    if passes is None or passes.q is None:
        raise ValueError("the model's own windows need each pass's q/k/v: encode with keep_windows=True")
    if head is None:
        return passes, passes.q, passes.k, passes.v
    if not 0 <= head < doc.heads:
        raise ValueError(f"head {head} is out of range 0..{doc.heads - 1}")
    return passes, *(x[:, head : head + 1] for x in (passes.q, passes.k, passes.v))


def own_windows(doc: Doc, head: int | None = None) -> Result:
    """The attention each window's forward pass computed, as a Result over the Doc's tokens.

    Query row i gets the softmax over the keys of the pass it was kept from, from that pass's
    own q and k (window-local positions, rotary included; masked to the past inside the pass on
    a decoder): the model's own attention row (output_attentions), placed on the keys' Doc
    columns (the pass's own special tokens on the Doc's), zeros elsewhere. output[:, i] is that
    row times the same pass's own v: what the model's attention gave token i (before the output
    projection). So weights(rows) @ v == output[:, rows] holds with each pass's own v, not with
    doc.v, whose rows near a window edge come from a neighbouring pass. head: one head (a
    one-head Result, as the app's pages use) or all.
    """
    passes, q, k, v = _own_passes(doc, head)
    heads, n, causal = q.shape[1], doc.n, doc.causal
    cols, owner, local = passes.columns(), passes.owner, passes.local
    keys = torch.arange(passes.length, device=q.device)

    def place(rows: torch.Tensor, fill, dtype) -> torch.Tensor:
        out = torch.zeros(heads, rows.numel(), n, dtype=dtype, device=q.device)
        own = owner[rows]
        for w in own.unique().tolist():
            sel = (own == w).nonzero().squeeze(1)
            out[:, sel[:, None], cols[w][None]] = fill(w, local[rows[sel]])
        return out

    def weights(rows):
        return place(rows, lambda w, at: attention.weights(q[w], k[w], at, causal), q.dtype)

    def reach(rows):
        def seen(_w, at):
            ok = keys[None] <= at[:, None] if causal else torch.ones(at.numel(), keys.numel(), dtype=torch.bool,
                                                                      device=q.device)
            return ok[None].expand(heads, -1, -1)

        return place(rows, seen, torch.bool)

    output = torch.empty(heads, n, v.shape[-1], dtype=v.dtype, device=v.device)
    for w in range(passes.count):
        kept = (owner == w).nonzero().squeeze(1)
        for part in row_chunks(kept.numel(), chunk_rows(passes.length, heads, q.device), q.device):
            rows = kept[part]
            output[:, rows] = attention.weights(q[w], k[w], local[rows], causal) @ v[w]
    one = dense_cost(heads, passes.length, q.shape[-1], v.shape[-1])
    return Result(output, weights, reach_fn=reach,
                  structure={"scope": "the model's own windows", "passes": passes.count,
                             "length": passes.length, "starts": passes.starts.tolist()},
                  cost={key: value * passes.count for key, value in one.items()})


def restarts(doc: Doc) -> bool:
    """Whether the Doc's q/k carry positions that restart in every pass (absolute positions, several passes)."""
    return doc.passes is not None and doc.passes.local_positions and doc.passes.count > 1


def kept_grid(passes: Passes) -> torch.Tensor:
    """[passes, length]: the Doc token each pass kept at each window position, -1 where it kept
    none; special tokens left out (they are not content and sit at one position only)."""
    n = passes.owner.numel()
    grid = torch.full((passes.count, passes.length), -1, dtype=torch.long, device=passes.owner.device)
    text = torch.arange(passes.prefix, n - passes.suffix, device=grid.device)
    grid[passes.owner[text], passes.local[text]] = text
    return grid


def echo_share(s: torch.Tensor, rows: torch.Tensor, grid: torch.Tensor, apart: int, causal: bool) -> torch.Tensor:
    """[heads, m]: how much of each query's score variance, over keys at least `apart` tokens
    away (never in one pass with it), the key's window position explains.

    Scores s [heads, m, n] (any shift per row; -inf on masked keys) are grouped by the key's
    window position; the between-group share of variance is adjusted for chance (epsilon^2:
    0 when window positions explain no more than as many random groups would, 1 when they
    explain everything). NaN where a query has too few such keys.
    """
    heads, m, _ = s.shape
    keys = grid.clamp_min(0)
    far = (grid >= 0)[None] & ((keys[None] - rows[:, None, None]).abs() >= apart)  # [m, passes, length]
    if causal:
        far &= keys[None] <= rows[:, None, None]
    x = torch.where(far, s[:, :, keys.flatten()].view(heads, m, *grid.shape), 0.0)
    count = far.sum(1).to(s.dtype)  # [m, length]: far keys at each window position
    means = x.sum(2) / count.clamp_min(1)
    within = torch.where(far, x - means[:, :, None], 0.0).square().sum((2, 3)).double()
    total_keys, groups = count.sum(-1).double(), (count > 0).sum(-1).double()
    grand = (means * count).sum(-1).double() / total_keys.clamp_min(1)
    between = (count * (means.double() - grand[..., None]).square()).sum(-1)
    spread = (within + between) / (total_keys - 1)
    share = 1 - (within / (total_keys - groups)) / spread
    ok = (total_keys - groups >= 1) & (spread > 0)
    return torch.where(ok, share, torch.nan).to(s.dtype)


def position_share(doc: Doc, max_rows: int = 256) -> torch.Tensor:
    """[heads]: echo_share of dense scores, averaged over up to max_rows evenly spaced queries:
    how much of a head's whole-text map beyond one window is the restarting positions.

    ValueError on a Doc whose positions do not restart (one pass, rotary, synthetic).
    """
    if not restarts(doc):
        raise ValueError("positions do not restart in this Doc (one pass, or positions applied globally)")
    grid, apart = kept_grid(doc.passes), doc.passes.length - doc.passes.prefix - doc.passes.suffix
    rows = sample_rows(doc.n, max_rows).to(doc.q.device)
    parts = [echo_share(attention.scores(doc.q, doc.k, rows[c], doc.causal), rows[c], grid, apart, doc.causal)
             for c in row_chunks(rows.numel(), chunk_rows(doc.n, doc.heads, doc.q.device, buffers=8))]
    return torch.cat(parts, dim=1).nanmean(dim=1)
