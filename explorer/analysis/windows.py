"""The model's own windows: the attention each forward pass computed, and how much the
restarting positions shape a whole-text map.

A text longer than the model's positions is encoded in overlapping passes, each token's q/k/v
kept from one of them (Doc.passes). Mechanisms run on "the whole text as one sequence"; the
model itself only ever attended inside a pass. With absolute position embeddings the kept q/k
carry window positions, so across passes tokens at one window position look alike and the
whole-text map shows stripes that are positions, not content; position_share measures that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from explorer.analysis.model_view import keys_seen, normalised
from explorer.core import attention
from explorer.core.device import chunk_rows
from explorer.core.doc import Doc, ModelCapture, Passes
from explorer.core.rows import row_chunks, sample_rows
from explorer.mechanisms.base import Result, Structure, dense_cost

SHARE_ROWS = 64  # queries position_share averages over: on the field guide 64 and 256 agree within 0.03
# and pick the same head; on the 129k-token reference the choice takes about 8 s (14 s with 128 rows)
SHARE_CHUNK = 64  # queries scored at once: larger blocks run slower on a CPU, not faster
CONTENT_SHARE = 0.1  # a head whose position share is at most this is shaped by content


@dataclass
class OwnWindowsStructure(Structure):
    """The passes the model attended in: each query row was computed inside one of them."""

    passes: int  # forward passes over the text
    length: int  # tokens each pass read, its special tokens included
    starts: list[int]  # [passes] the Doc token at each pass's position 0


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
    own q and k (rotary included), by the model's rule (its mask inside the pass, scale,
    soft-cap, sinks): the model's own attention row (output_attentions), placed on the keys' Doc
    columns (the pass's own special tokens on the Doc's), zeros elsewhere. output[:, i] is that
    row times the same pass's own v: what the model's attention gave token i (before the output
    projection). So weights(rows) @ v == output[:, rows] holds with each pass's own v, not with
    doc.v, whose rows near a window edge come from a neighbouring pass. head: one head (a
    one-head Result, as the app's pages use) or all.
    """
    passes, q, k, v = _own_passes(doc, head)
    heads, n = q.shape[1], doc.n
    rule = doc.model_rule if head is None else doc.model_rule.of_head(head)
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
        return place(rows, lambda w, at: rule.weights(q[w], k[w], at), q.dtype)

    def reach(rows):
        return place(rows, lambda _w, at: rule.allowed(at, keys)[None].expand(heads, -1, -1), torch.bool)

    output = torch.empty(heads, n, v.shape[-1], dtype=v.dtype, device=v.device)
    for w in range(passes.count):
        kept = (owner == w).nonzero().squeeze(1)
        for part in row_chunks(kept.numel(), chunk_rows(passes.length, heads, q.device), q.device):
            rows = kept[part]
            output[:, rows] = rule.weights(q[w], k[w], local[rows]) @ v[w]
    one = dense_cost(heads, passes.length, q.shape[-1], v.shape[-1])
    return Result(output, weights, reach_fn=reach,
                  structure=OwnWindowsStructure(passes.count, passes.length, passes.starts.tolist()),
                  cost={key: value * passes.count for key, value in one.items()})


def restarts(doc: Doc) -> bool:
    """Whether the Doc's q/k carry positions that restart in every pass (absolute positions, several passes)."""
    return doc.passes is not None and doc.passes.local_positions and doc.passes.count > 1


def boundaries(doc: Doc) -> list[int]:
    """Doc positions where the pass a token was kept from changes: where the model's windows meet."""
    if doc.passes is None or doc.passes.count < 2:
        return []
    owner = doc.passes.owner
    return (torch.nonzero(owner[1:] != owner[:-1]).flatten() + 1).tolist()


def kept_grid(passes: Passes) -> torch.Tensor:
    """[passes, length]: the Doc token each pass kept at each window position, -1 where it kept
    none; special tokens left out (they are not content and sit at one position only)."""
    n = passes.owner.numel()
    grid = torch.full((passes.count, passes.length), -1, dtype=torch.long, device=passes.owner.device)
    text = torch.arange(passes.prefix, n - passes.suffix, device=grid.device)
    grid[passes.owner[text], passes.local[text]] = text
    return grid


def _runs(passes: Passes) -> list[list[int]]:
    """[first Doc token, first window position, length, passes]: the kept text tokens as runs of
    passes that each keep `length` tokens from the same window position on, one after another
    (with a fixed stride, all but the first and last few): one reshaped block each."""
    grid, runs = kept_grid(passes), []
    for w in range(passes.count):
        at = (grid[w] >= 0).nonzero().squeeze(1)
        if not at.numel():
            continue
        first, t0, length = int(grid[w, at[0]]), int(at[0]), at.numel()
        if runs and runs[-1][1:3] == [t0, length]:
            runs[-1][3] += 1
        else:
            runs.append([first, t0, length, 1])
    return runs


def _group_sums(s: torch.Tensor, passes: Passes) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of s and s^2 over all text keys grouped by window position: [heads, m, length] each,
    float64 (a run's own sums are float32: a few hundred terms at most)."""
    s1 = torch.zeros(*s.shape[:2], passes.length, dtype=torch.float64, device=s.device)
    s2 = torch.zeros_like(s1)
    for first, t0, length, count in _runs(passes):
        block = s[:, :, first : first + length * count].unflatten(-1, (count, length))
        s1[:, :, t0 : t0 + length] += block.sum(2)
        s2[:, :, t0 : t0 + length] += block.square().sum(2)
    return s1, s2


def echo_share(s: torch.Tensor, rows: torch.Tensor, passes: Passes, causal: bool) -> torch.Tensor:
    """[heads, m]: how much of each query's score variance, over text keys a window or more away
    (never in one pass with it), the key's window position explains.

    Scores s [heads, m, n] (any shift per row; 0, not -inf, on masked keys) are grouped by the
    key's window position; the between-group share of variance is adjusted for chance (Kelley's
    epsilon^2: 0 when window positions explain no more than as many random groups would, 1 when
    they explain everything). Sums over all keys by slices, less those of the keys within a
    window of the query. NaN where a query has too few such keys.
    """
    heads, m, n = s.shape
    apart = passes.length - passes.prefix - passes.suffix
    s1, s2 = _group_sums(s, passes)
    grid = kept_grid(passes)
    seen = (grid >= 0)[None] & (grid[None] <= rows[:, None, None] if causal else True)
    count = seen.sum(1).double().expand(m, -1).contiguous()  # [m, length]
    near = rows[:, None] + torch.arange(1 - apart, apart, device=s.device)[None]
    ok = (near >= passes.prefix) & (near < n - passes.suffix) & ((near <= rows[:, None]) if causal else True)
    near = near.clamp(passes.prefix, n - passes.suffix - 1)
    at = passes.local[near]
    vals = torch.where(ok, s.gather(-1, near[None].expand(heads, -1, -1)), 0.0).double()
    s1.scatter_add_(-1, at[None].expand(heads, -1, -1), -vals)
    s2.scatter_add_(-1, at[None].expand(heads, -1, -1), -vals.square())
    count.scatter_add_(-1, at, -ok.double())
    keys, groups = count.sum(-1), (count > 0.5).sum(-1).double()
    total = s2.sum(-1) - s1.sum(-1).square() / keys.clamp_min(1)
    within = s2.sum(-1) - (s1.square() / count.clamp_min(1)).sum(-1)
    share = 1 - (within / (keys - groups)) / (total / (keys - 1))
    return torch.where((keys - groups >= 1) & (total > 0), share, torch.nan).to(s.dtype)


def position_share(doc: Doc, max_rows: int = SHARE_ROWS) -> torch.Tensor:
    """[heads]: echo_share of dense scores, averaged over up to max_rows evenly spaced queries:
    how much of a head's whole-text map beyond one window is the restarting positions.

    ValueError on a Doc whose positions do not restart (one pass, rotary, synthetic).
    """
    return _shares_and_entropy(doc, max_rows)[0]


def _shares_and_entropy(doc: Doc, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([heads] position_share, [heads] normalised entropy), from one scoring of the same rows."""
    if not restarts(doc):
        raise ValueError("positions do not restart in this Doc (one pass, or positions applied globally)")
    rows = sample_rows(doc.n, max_rows).to(doc.q.device)
    shares, entropies = [], []
    for c in row_chunks(rows.numel(), min(SHARE_CHUNK, chunk_rows(doc.n, doc.heads, doc.q.device, buffers=3))):
        s = attention.scores(doc.q, doc.k, rows[c], doc.causal)
        entropies.append(_normalised_entropy(s, rows[c], doc.causal))
        shares.append(echo_share(s.nan_to_num_(neginf=0.0), rows[c], doc.passes, doc.causal))
    return torch.cat(shares, dim=1).nanmean(dim=1), torch.cat(entropies, dim=1).nanmean(dim=1)


def _normalised_entropy(s: torch.Tensor, rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """[heads, m]: each row's softmax entropy over log of the keys it sees (as model_view's)."""
    logp = s.log_softmax(-1)
    h = -(logp.exp() * logp).nan_to_num_(0.0).sum(-1)  # masked keys: 0 * -inf
    return normalised(h, keys_seen(rows, s.shape[-1], causal, s.dtype))


def content_heads(capture: ModelCapture | Sequence[Doc], max_rows: int = SHARE_ROWS,
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One line per (layer, head): position_share and normalised entropy on the same max_rows
    evenly spaced queries, lowest position share first: the heads where content, not the
    restarting positions, shapes the whole-text map come first. progress(layers done, layers).
    ValueError where positions do not restart (see restarts)."""
    docs = capture.docs if isinstance(capture, ModelCapture) else list(capture)
    lines = []
    for i, doc in enumerate(docs):
        share, entropy = _shares_and_entropy(doc, max_rows)
        lines += [{"layer": doc.layer, "head": h, "position_share": float(share[h]), "entropy": float(entropy[h])}
                  for h in range(doc.heads)]
        if progress:
            progress(i + 1, len(docs))
    return pd.DataFrame(lines).sort_values(["position_share", "layer", "head"], ignore_index=True)


def _share(x: float) -> str:
    """A share explained as a percentage; a fit a hair below zero (none explained) reads 0%, not -0%."""
    return f"{max(float(x), 0.0):.0%}"


def default_layer_head(heads: pd.DataFrame, content: float = CONTENT_SHARE) -> tuple[int, int, str]:
    """The layer and head a page should open on when positions restart, and why, in words.

    Of the heads whose far-key scores window positions explain at most `content` of (all the
    least shaped ones when none is), the most focused (lowest normalised entropy): its map shows
    the text's own structure, not stripes of window positions, and is not near uniform.
    heads: content_heads' table (or any with layer, head, position_share, entropy); heads
    without far keys to measure (position_share NaN) are left out.
    """
    heads = heads.dropna(subset=["position_share"])
    if heads.empty:
        raise ValueError("no head has keys a window or more away to measure (the text is about one window long)")
    few = heads[heads.position_share <= content]
    pool = few if len(few) else heads[heads.position_share == heads.position_share.min()]
    best = pool.sort_values(["entropy", "layer", "head"]).iloc[0]
    layer, head = int(best["layer"]), int(best["head"])
    why = (f"Layer {layer}, head {head}: window positions explain {_share(best.position_share)} of how its scores "
           f"vary over keys a window or more away (heads range {_share(heads.position_share.min())} to "
           f"{_share(heads.position_share.max())}); ")
    why += (f"of the {len(few)} heads at or under {content:.0%} it is the most focused (normalised entropy "
            f"{best.entropy:.2f})." if len(few) else f"no head is under {content:.0%}, and this one is the least shaped.")
    return layer, head, why
