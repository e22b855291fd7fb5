"""The whole model at a glance: per layer and head, statistics of exact attention over the whole
text, from evenly spaced query rows (exact for those rows, never an n x n matrix).

Each layer's sampled rows are scored once, in chunks of all heads together, and every
statistic comes from that one pass: so the working set is one layer's chunk buffers, while
the capture (every layer's q/k/v from one forward pass, encoding.encode_layers) is held
whole. Mass on the first token is the attention sink of Xiao et al. (2024, "Efficient
Streaming Language Models with Attention Sinks"); the first token is the Doc's token 0: [CLS]
for BERT-style models, <s>/BOS where the tokenizer adds one, else the text's first token.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import pandas as pd
import torch

from explorer.core import binreduce
from explorer.core.checks import check_qkv
from explorer.core.device import chunk_rows
from explorer.core.doc import Doc, ModelCapture
from explorer.core.encoding import encode_layers
from explorer.core.rows import row_chunks, sample_rows
from explorer.core.rule import AttentionRule
from explorer.mechanisms.base import Mechanism

QUERIES = 512  # sampled query rows per head
HALF_EVERY = 8  # half_keys sorts its rows, the one step not linear in n: every 8th sampled row (64 of 512)
LOCAL = 8  # local mass counts keys with |i - j| <= LOCAL
BUFFERS = 4  # score-sized buffers a chunk of rows takes: the scores (then weights), a copy matmul may make, a sort
COLUMNS = {
    "entropy": "normalised entropy (entropy / log of keys seen; 1 = uniform)",
    "first_mass": "mass on the first token (the attention sink)",
    "local_mass": "local mass (keys within the local distance)",
    "distance": "mean attention distance (tokens)",
    "half_keys": "keys holding half of each query's attention",
    "rel_error": "output relative error against dense",
    "retrieval": "retrieval score (Wu et al.: the answer copied from the fact)",
}


def keys_seen(rows: torch.Tensor, n: int, causal: bool, dtype=torch.float32, window: int | None = None) -> torch.Tensor:
    """How many keys each listed query can see: all n, or (causal) those up to itself, within a
    sliding window when there is one (window keys back when causal, window each side otherwise)."""
    if window is None:
        return (rows + 1).to(dtype) if causal else torch.full(rows.shape, float(n), dtype=dtype, device=rows.device)
    first = (rows - (window - 1 if causal else window)).clamp_min(0)
    last = rows if causal else (rows + window).clamp_max(n - 1)
    return (last - first + 1).to(dtype)


def normalised(entropy: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Entropy over log of the keys seen: 1 for a uniform row; NaN for a query that sees one key."""
    return torch.where(seen > 1, entropy / seen.log().clamp_min(1e-30), math.nan)


def row_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, rule: AttentionRule,
              local: int, half_every: int = 1) -> dict[str, torch.Tensor]:
    """Per head and listed query row, from one pass over their softmax rows: normalised entropy,
    mass on key 0, mass within `local` tokens, mean |i - j|, how many of the heaviest keys it
    takes to hold half the row's mass, and the dense output rows ([heads, len(rows)]; output
    [heads, len(rows), dv]). half_keys is taken on every `half_every`-th listed row (NaN on the
    others): it sorts each row, which at 69k keys costs ten times all the rest together.

    q, k, v as check_qkv returns them (layer_stats checks them once). The scores' buffer becomes
    the unnormalised weights e = exp(s - max) in place, and every statistic is a sum over e divided
    by z = sum e: one score-sized buffer. With the compiled reductions (explorer.core.binreduce)
    the entropy is log z - sum e log e / z from the same pass; without them, log z + max - E_p[s],
    with E_p[s] = q . (e @ k) * scale / z, or under a soft-cap, a position bias or sinks (the score
    is no longer q . k) -sum p log p from e itself.
    A sink's exp joins z, so the weights over the text sum to less than one, as the model has them.
    """
    n = k.shape[1]
    e = rule.scores(q, k, rows)
    spent = None
    if binreduce.available(e, 0):  # one compiled pass per row: max, exp in place, sum, sum e log e
        _, top, z, spent, _, _ = binreduce.bin_reduce(e, 1, n, e.new_zeros(n), 0)
        z = z[..., 0]
    else:
        top = e.amax(-1)
        e.sub_(top[..., None]).exp_()  # masked keys: exp(-inf) = 0
        z = e.sum(-1)
    sinks = rule.sink_logits(q.shape[0], e)
    sink = None if sinks is None else torch.exp(sinks[..., 0] - top)
    if sink is not None:
        z = z + sink
    if spent is None and rule.dot_scores and sink is None:
        mean_score = (q[:, rows] * torch.matmul(e, k)).sum(-1) * rule.scaling / z
        entropy = (z.log() + top - mean_score).clamp_min(0)
    else:
        spent = torch.special.xlogy(e, e).sum(-1) if spent is None else spent
        spent = spent + (0 if sink is None else torch.special.xlogy(sink, sink))
        entropy = (z.log() - spent / z).clamp_min(0)
    seen = keys_seen(rows, n, rule.causal, e.dtype, rule.window)
    near = rows[:, None] + torch.arange(-local, local + 1, device=e.device)[None]
    inside = ((near >= 0) & (near < n)).to(e.dtype)
    gap = (rows[:, None] - torch.arange(n, device=e.device)[None]).abs().to(e.dtype)
    return {
        "entropy": normalised(entropy, seen),
        "first_mass": e[..., 0] / z,
        "local_mass": (e.gather(-1, near.clamp(0, n - 1)[None].expand(e.shape[0], -1, -1)) * inside).sum(-1) / z,
        "distance": torch.matmul(e.transpose(0, 1), gap.unsqueeze(-1)).squeeze(-1).T / z,  # each row's own |i - j|
        "output": torch.matmul(e, v) / z[..., None],
        "half_keys": _half_keys(e, z, half_every),
    }


def _half_keys(e: torch.Tensor, z: torch.Tensor, every: int) -> torch.Tensor:
    """[heads, m]: how many of the heaviest keys hold half of each row's mass, on every `every`-th row."""
    out = torch.full(z.shape, math.nan, device=z.device)
    picked = slice(None, None, every)
    heavy = e[:, picked].sort(dim=-1, descending=True).values.cumsum(-1)
    out[:, picked] = (heavy < 0.5 * z[:, picked, None]).sum(-1) + 1.0
    return out


def layer_stats(doc: Doc, rows: torch.Tensor, local: int = LOCAL, mechanism: Mechanism | None = None,
                params: dict | None = None, progress: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """Every COLUMNS statistic of one layer's heads on the listed rows: name -> [heads] (the mean
    over rows; rel_error only with a mechanism, run on each head alone as a page runs it).

    The dense reference is the model's own rule (doc.model_rule: its mask, scale, soft-cap, sinks);
    the mechanism runs with `params`
    as given (pass causal=True to a decoder's, where it has the parameter). progress() after
    every chunk and every mechanism run.
    """
    q, k, v = check_qkv(doc.q, doc.k, doc.v)  # once a layer, not once a chunk: the check reads all of q, k, v
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for c in row_chunks(rows.numel(), chunk_rows(doc.n, doc.heads, q.device, buffers=BUFFERS)):
            for name, value in row_stats(q, k, v, rows[c].to(q.device), doc.model_rule, local, HALF_EVERY).items():
                parts.setdefault(name, []).append(value)
            if progress:
                progress()
        got = {name: torch.cat(value, dim=1) for name, value in parts.items()}
        dense = got.pop("output")
        if mechanism is not None:
            got["rel_error"] = _rel_error(doc, rows, dense, mechanism, params or {}, progress)
    return {name: value.nanmean(dim=1).cpu() for name, value in got.items()}


def _rel_error(doc: Doc, rows: torch.Tensor, dense: torch.Tensor, mechanism: Mechanism, params: dict,
               progress) -> torch.Tensor:
    """[heads, len(rows)]: |o_mech - o_dense| / |o_dense| of each head's output rows."""
    errors = []
    for h in range(doc.heads):
        res = mechanism.run(*doc.head(h), **mechanism.for_head(params, h, doc.heads))
        got = res.output[0, rows.to(res.output.device)]
        errors.append((got - dense[h]).norm(dim=-1) / dense[h].norm(dim=-1).clamp_min(1e-12))
        if progress:
            progress()
    return torch.stack(errors)


def model_view(capture: ModelCapture | Sequence[Doc], queries: int = QUERIES, local: int = LOCAL,
               mechanism: Mechanism | None = None, params: dict | None = None,
               progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One line per (layer, head): every COLUMNS statistic over `queries` evenly spaced query rows
    (all rows when the text is shorter), plus the settings (queries, local window, mechanism) so
    that the CSV says what it holds. progress(done, total) counts chunks and mechanism runs.

    attrs["seconds"]: the statistics' own time (the forward pass is the capture's).
    """
    docs = capture.docs if isinstance(capture, ModelCapture) else list(capture)
    if not docs:
        raise ValueError("no layers to show: capture at least one")
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise ValueError(f"queries={queries!r} must be a whole number of at least 1")
    if isinstance(local, bool) or not isinstance(local, int) or local < 0:
        raise ValueError(f"local={local!r} must be a whole number of at least 0")
    if mechanism is not None:
        mechanism.validate(params or {})
    start = time.perf_counter()
    rows = sample_rows(docs[0].n, queries)
    per_layer = math.ceil(rows.numel() / chunk_rows(docs[0].n, docs[0].heads, docs[0].q.device, buffers=BUFFERS))
    per_layer += docs[0].heads if mechanism is not None else 0
    done = [0]

    def step():
        done[0] += 1
        if progress:
            progress(done[0], per_layer * len(docs))

    lines = []
    for doc in docs:
        stats = layer_stats(doc, rows, local, mechanism, params, step)
        for h in range(doc.heads):
            line = {"layer": doc.layer, "head": h, "queries": rows.numel(), "local_window": local}
            line.update({name: float(stats[name][h]) for name in COLUMNS if name in stats})
            if mechanism is not None:
                line["mechanism"] = mechanism.key
            lines.append(line)
    frame = pd.DataFrame(lines)
    frame.attrs.update(seconds=time.perf_counter() - start, params=dict(params or {}))
    return frame


def bench_line(text: str, model: str = "minilm", queries: int = QUERIES, mechanism: Mechanism | None = None,
               params: dict | None = None) -> dict:
    """The benchmark's model view line: the one forward pass over every layer, then the grid's
    statistics, timed apart (the target is the statistics' time)."""
    start = time.perf_counter()
    capture = encode_layers(text, model)
    forward = time.perf_counter() - start
    frame = model_view(capture, queries, mechanism=mechanism, params=params)
    doc = capture.docs[0]
    return {"tokens": doc.n, "layers": len(capture.docs), "heads": doc.heads, "queries": int(frame.queries.iloc[0]),
            "mechanism": mechanism.key if mechanism else "", "forward_s": round(forward, 2),
            "stats_s": round(frame.attrs["seconds"], 2)}
