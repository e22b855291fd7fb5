"""The attention-sink measure of Gu et al. (ICLR 2025, "When Attention Sink Emerges in Language Models").

A key's score is the attention it receives divided by the number of queries
that can see it, sum_i a_ik / |{i : i can see k}| (under a causal mask
(n - k) queries see key k, so this is their eq. alpha_k = mean_{i >= k} a_ik;
unmasked, all n). A head has a sink on token k (the first, by default) when
its score exceeds a threshold (0.3 in the paper); the sink metric is the
share of heads (over every layer given) that have one. Scores are summed over
query chunks, never an n x n matrix. For a mechanism, "can see" is its reach.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from explorer.core.rule import AttentionRule
from explorer.core.device import chunk_rows
from explorer.core.rows import row_chunks
from explorer.mechanisms.base import Result

THRESHOLD = 0.3  # Gu et al.'s epsilon

Rows = Callable[[torch.Tensor], torch.Tensor]  # query rows -> [heads, len(rows), n]


def key_scores(weights: Rows, reach: Rows, n: int, heads: int, device=None,
               rows: torch.Tensor | None = None) -> torch.Tensor:
    """[heads, n]: attention each key receives per query that can see it (0 for a key none can).

    rows: measure on these queries only (e.g. evenly spaced ones on a long text): each key's score
    is then the mean over the measured queries that see it, an unbiased estimate of the whole."""
    got = torch.zeros(heads, n, dtype=torch.float64, device=device)
    seen = torch.zeros(heads, n, dtype=torch.float64, device=device)
    chunk = chunk_rows(n, heads, torch.device(device or "cpu"))
    blocks = row_chunks(n, chunk, device) if rows is None else rows.to(device).split(chunk)
    for block in blocks:
        got += weights(block).sum(1).double()
        seen += reach(block).sum(1).double()
    return torch.where(seen > 0, got / seen.clamp_min(1), torch.zeros_like(got))


def dense_key_scores(q: torch.Tensor, k: torch.Tensor, causal: bool = False,
                     rows: torch.Tensor | None = None, rule: AttentionRule | None = None) -> torch.Tensor:
    """key_scores of exact softmax attention; a key is seen by every query at or after it when causal.
    With a model's rule, of attention as the model computes it, seen by the queries its mask lets see it."""
    rule = rule or AttentionRule.plain(q.shape[-1], causal)
    n = k.shape[1]
    keys = torch.arange(n, device=k.device)

    def reach(block):
        return rule.allowed(block, keys)[None].expand(q.shape[0], -1, -1)

    return key_scores(lambda block: rule.weights(q, k, block), reach, n, q.shape[0], k.device, rows)


@dataclass
class SinkMeasure:
    """Key scores of every head of one or more layers, and the sink verdict on one token."""

    scores: np.ndarray  # [layers, heads, n]
    layers: list[int]
    threshold: float = THRESHOLD
    token: int = 0  # the key judged a sink (the first token)

    @classmethod
    def merge(cls, *parts: SinkMeasure) -> SinkMeasure:
        """Layers measured apart (same text, threshold and token), stacked in the order given."""
        if not parts:
            raise ValueError("nothing to merge")
        for p in parts[1:]:
            if (p.threshold, p.token, p.scores.shape[1:]) != (parts[0].threshold, parts[0].token,
                                                              parts[0].scores.shape[1:]):
                raise ValueError("cannot merge sink measures of different threshold, token, heads or n")
        return cls(np.concatenate([p.scores for p in parts]), [x for p in parts for x in p.layers],
                   parts[0].threshold, parts[0].token)

    @property
    def token_scores(self) -> np.ndarray:
        """[layers, heads]: the judged token's score in every head."""
        return self.scores[:, :, self.token]

    @property
    def sink_heads(self) -> np.ndarray:
        """[layers, heads] bool: heads whose score on the token exceeds the threshold."""
        return self.token_scores > self.threshold

    @property
    def share(self) -> float:
        """Gu et al.'s sink metric: the share of heads with a sink on the token."""
        return float(self.sink_heads.mean())

    def frame(self):
        """Tidy table: one line per (layer, head) with the token's score and whether it is a sink."""
        import pandas as pd

        return pd.DataFrame([{"layer": layer, "head": h, "token": self.token, "score": float(self.token_scores[i, h]),
                              "sink": bool(self.sink_heads[i, h]), "threshold": self.threshold}
                             for i, layer in enumerate(self.layers) for h in range(self.scores.shape[1])])


def _measure(scores: torch.Tensor, layer: int, threshold: float, token: int) -> SinkMeasure:
    if not 0 <= token < scores.shape[1]:
        raise ValueError(f"token {token} is out of range 0..{scores.shape[1] - 1}")
    return SinkMeasure(scores.cpu().numpy()[None], [layer], float(threshold), token)


def sink_measure(q: torch.Tensor, k: torch.Tensor, causal: bool = False, threshold: float = THRESHOLD,
                 layer: int = 0, token: int = 0, rows: torch.Tensor | None = None,
                 rule: AttentionRule | None = None) -> SinkMeasure:
    """The sink measure of dense attention on every head of one layer's q, k [heads, n, d]
    (measured on the query `rows` only, when given; by the model's rule, when given)."""
    return _measure(dense_key_scores(q, k, causal, rows, rule), layer, threshold, token)


def sink_measure_of(res: Result, threshold: float = THRESHOLD, layer: int = 0, token: int = 0) -> SinkMeasure:
    """The sink measure of a mechanism's effective weights (seen = its reach)."""
    heads, n = res.output.shape[:2]
    return _measure(key_scores(res.weights, res.reach, n, heads, res.output.device), layer, threshold, token)


def sink_layer(docs, threshold: float = THRESHOLD) -> tuple[int, int, str]:
    """Where a causal LM shows its characteristic sink: the layer with the most heads that have a
    first-token sink (ties: the higher mean score), its head with the highest score, and why in words.

    docs: every layer's Doc of one text (a ModelCapture's docs, e.g. of the text's first tokens).
    When no head has a sink, the layer and head scoring highest, and words that say there is none."""
    measure = SinkMeasure.merge(*(sink_measure(d.q, d.k, threshold=threshold, layer=d.layer, rule=d.model_rule)
                                  for d in docs))
    counts, mean = measure.sink_heads.sum(1), measure.token_scores.mean(1)
    best = max(range(len(measure.layers)), key=lambda i: (counts[i], mean[i]))
    head = int(measure.token_scores[best].argmax())
    layer, n = measure.layers[best], docs[0].n
    if counts[best] == 0:
        return layer, head, (f"no head of any layer gives the first token more than {threshold:g} of its attention "
                             f"on the text's first {n:,} tokens (Gu et al.'s sink measure); this head comes "
                             f"closest, at {measure.token_scores[best, head]:.2f}")
    return layer, head, (f"on the text's first {n:,} tokens, {counts[best]} of its {measure.scores.shape[1]} heads "
                         f"give the first token more than {threshold:g} of their attention, an attention sink (Gu "
                         f"et al.), the most of any layer; this head gives it {measure.token_scores[best, head]:.2f}")


def verdict(measure: SinkMeasure, causal: bool) -> str:
    """What the sink share means for this model, in a sentence or two, in the chart's terms (its
    threshold, its layer), so a 0% reads the same in the title, the caption and here."""
    if measure.share > 0:
        return (f"**{measure.share:.0%} of these heads park attention on the first token**: when no other token "
                "is relevant, they put their mass where it changes the output least, a sink. Sparse mechanisms "
                "that drop the first token lose that mass (sink + window keeps it).")
    none = f"**No head here scores above {measure.threshold:g} on the first token.**"
    if not causal:
        return (f"{none} An encoder that reads both ways, with [CLS] first, forms no StreamingLLM-style sink; pick "
                "the causal LM **smollm2** in the sidebar to see sinks form (most of its heads past the first "
                "layers have one).")
    where = "layer" if len(measure.layers) == 1 else "layers"
    return (f"{none} This causal model has no sink in {where} {', '.join(map(str, measure.layers))}: sinks form "
            "past the first layers, so try another layer in the sidebar, or a lower threshold.")
