"""How one layer of a model turns q . k into attention probabilities: its scale, its mask
(causal, sliding window), a soft-cap on the scores, a position bias added inside the layer
(ALiBi, learned relative buckets: explorer.core.bias) and learned sink logits.

The capture (explorer.core.encoding) records a rule for every layer from what the
model passes its attention function, so the explorer can compute the model's own
attention over a whole text (`weights`), and the plain softmax (`plain`) stays
the yardstick every mechanism is compared with.

A sink (gpt-oss, "attention sinks" as learned logits) is one extra slot in each
row's normaliser that attends to nothing: the weights over the text then sum to
less than one, by as much as the model set aside.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from explorer.core.bias import PositionBias
from explorer.core.checks import check_qkv
from explorer.core.masks import MaskMod, mask_rows


@dataclass(frozen=True)
class AttentionRule:
    scaling: float  # multiplies q . k
    causal: bool
    window: int | None = None  # sliding window: causal keys with q - k < window; bidirectional |q - k| <= window
    softcap: float | None = None  # scores become softcap * tanh(score / softcap)
    sinks: tuple[float, ...] | None = None  # one learned sink logit per head
    bias: PositionBias | None = None  # added to the (soft-capped) scores, as the layer adds it

    @classmethod
    def plain(cls, head_dim: int, causal: bool) -> AttentionRule:
        """Softmax of q . k / sqrt(d), masked to the past when causal: the yardstick."""
        return cls(head_dim**-0.5, causal)

    @property
    def is_plain(self) -> bool:
        """True when the rule adds nothing to a scaled softmax (scale and causality aside)."""
        return self.window is None and self.softcap is None and self.sinks is None and self.bias is None

    @property
    def dot_scores(self) -> bool:
        """True when a score is the scaled q . k itself (no soft-cap, no bias): then the expected score
        of a row is q . E_p[k], one matmul, rather than a log per weight."""
        return self.softcap is None and self.bias is None

    def of_head(self, head: int) -> AttentionRule:
        """The rule of one head (its own sink logit, its own slope or row of the bias table)."""
        return self.of_heads(head, head + 1)

    def of_heads(self, first: int, stop: int) -> AttentionRule:
        """The rule of heads first..stop-1, as a pass over a group of heads uses it."""
        if self.sinks is None and self.bias is None:
            return self
        return replace(self, sinks=None if self.sinks is None else self.sinks[first:stop],
                       bias=None if self.bias is None else self.bias.of_heads(first, stop))

    def check_heads(self, heads: int) -> None:
        """ValueError unless the rule's per-head values (sinks, bias) are for `heads` heads."""
        if self.sinks is not None and len(self.sinks) != heads:
            raise ValueError(f"the rule has {len(self.sinks)} sink logits for {heads} heads")
        if self.bias is not None and self.bias.heads != heads:
            raise ValueError(f"the rule's position bias has {self.bias.heads} heads for {heads} heads")

    def mask(self) -> MaskMod:
        """Which keys a query may attend to, as a mask_mod of (batch, head, q_idx, kv_idx)."""
        causal, window = self.causal, self.window

        def mask(b, h, q_idx, kv_idx):
            ok = kv_idx <= q_idx if causal else torch.ones_like(q_idx - kv_idx, dtype=torch.bool)
            if window is not None:
                ok = ok & ((q_idx - kv_idx < window) if causal else ((q_idx - kv_idx).abs() <= window))
            return ok

        return mask

    def allowed(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Boolean [len(rows), len(keys)]: which of the keys (indices) each listed query may attend to."""
        return mask_rows(self.mask(), rows, keys)

    def scores(self, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Scores [heads, len(rows), len(keys)] of the listed queries on the listed keys (None: all n) as
        the softmax receives them, -inf where masked."""
        seen = k if keys is None else k[:, keys]  # every key: k itself, not a gathered copy of it
        keys = torch.arange(k.shape[1], device=k.device) if keys is None else keys
        s = torch.matmul(q[:, rows], seen.transpose(1, 2)).mul_(self.scaling)  # in place: the largest tensor
        if self.softcap is not None:
            s = torch.tanh(s / self.softcap) * self.softcap
        if self.bias is not None:
            self.check_heads(s.shape[0])
            s = self.bias.add_to(s, rows, keys)
        return s.masked_fill_(~self.allowed(rows, keys), float("-inf"))

    def sink_logits(self, heads: int, like: torch.Tensor) -> torch.Tensor | None:
        """[heads, 1, 1] sink logits in like's dtype and device, or None."""
        if self.sinks is None:
            return None
        self.check_heads(heads)
        return torch.tensor(self.sinks, dtype=like.dtype, device=like.device).view(heads, 1, 1)

    def normaliser(self, s: torch.Tensor) -> torch.Tensor:
        """Log of each row's softmax denominator [heads, rows, 1], the sinks' slots included."""
        sink = self.sink_logits(s.shape[0], s)
        if sink is None:
            return torch.logsumexp(s, dim=-1, keepdim=True)
        return torch.logsumexp(torch.cat([s, sink.expand(-1, s.shape[1], 1)], dim=-1), dim=-1, keepdim=True)

    def weights(self, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Probabilities [heads, len(rows), n] over the n keys (they sum to less than 1 with sinks),
        computed as check_qkv says (a model's half-precision q, k in float32)."""
        q, k, _ = check_qkv(q, k)
        s = self.scores(q, k, rows)
        return torch.exp(s - self.normaliser(s))

    def column(self, q: torch.Tensor, k: torch.Tensor, key: int, lse: torch.Tensor) -> torch.Tensor:
        """[heads, n]: the weight every query puts on one key, exp(score - lse) with each query's
        log-sum-exp lse [heads, n] (the statistics pass's, sinks included): a key's column of the
        map from one pass over the queries, never the n x n matrix."""
        q, k, _ = check_qkv(q, k)
        s = self.scores(q, k, torch.arange(q.shape[1], device=q.device), torch.tensor([key], device=q.device))
        return torch.exp(s[..., 0] - lse.to(s))  # masked scores are -inf: weight 0

    def describe(self) -> str:
        """The rule in words, e.g. 'causal, sliding window of 4,096 keys, scores soft-capped at 50' or
        'causal, ALiBi position bias with slopes 0.5 to 0.00391 per token of distance'."""
        parts = ["causal" if self.causal else "bidirectional"]
        if self.window is not None:
            parts.append(f"sliding window of {self.window:,} keys" if self.causal
                         else f"local window of {self.window:,} keys each side")
        if self.softcap is not None:
            parts.append(f"scores soft-capped at {self.softcap:g}")
        if self.bias is not None:
            parts.append(self.bias.describe())
        if self.sinks is not None:
            parts.append("a learned sink logit per head")
        return ", ".join(parts)
