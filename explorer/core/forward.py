"""The model's own forward pass with chosen layers' attention computed by functions of ours, and the
next-token logits it then gives.

A causal LM loads with its LM head (explorer.core.bundled), and the capture runs its base model.
Here the base model runs over one sequence while the attention implementation the capture
registers (encoding._attend) hands each listed layer's call to a `LayerAttention`: it gets the
layer's query, key and value as the model attends with them (norms and rotary applied, kv heads
expanded to the query heads), [batch, heads, tokens, head_dim], and the layer's AttentionRule
(scale, causal, window, soft-cap, sinks), and returns the output [batch, heads, tokens, head_dim];
the hook puts it in the model's layout. Layers not listed run the model's own kernel.

One hook serves a mechanism swapped in (explorer.analysis.in_model), the layer's own attention
computed here (`exact`: what tests the plumbing against the model's logits), the probabilities of a
few query rows recorded (`recording`), and heads switched off (`ablating`); they compose.

Logits are made from the hidden states a few rows at a time (`logits`): SmolLM2's vocabulary is
49,152 tokens, so 2,048 rows at once would take 400 MB.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from explorer.core import inside
from explorer.core.device import chunk_rows
from explorer.core.encoding import _ACTIVE, LoadedModel, _rule, native
from explorer.core.rows import row_chunks
from explorer.core.rule import AttentionRule

# (q, k, v [batch, heads, tokens, head_dim], rule, layer) -> output [batch, heads, tokens, head_dim]
LayerAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionRule, int], torch.Tensor]


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rule: AttentionRule, layer: int | None = None):
    """The layer's own attention, computed here by its rule: SDPA at the layer's scale where the rule is a
    plain (causal) softmax, else the rule's scores (window, soft-cap, sinks) a chunk of rows at a time."""
    if rule.is_plain:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=rule.causal and q.shape[2] > 1, scale=rule.scaling)
    out = q.new_empty(*q.shape[:3], v.shape[-1])
    for b in range(q.shape[0]):
        for rows in row_chunks(q.shape[2], chunk_rows(k.shape[2], q.shape[1], q.device), q.device):
            s = rule.scores(q[b], k[b], rows)
            out[b, :, rows] = torch.exp(s - rule.normaliser(s)) @ v[b]
    return out


def recording(rows: torch.Tensor, into: dict, inner: LayerAttention = exact) -> LayerAttention:
    """`inner`, and the probabilities [heads, len(rows), tokens] the layer's own rule gives the listed
    query rows (of the first sequence) kept in into[layer]: what an answer's tokens attend to."""
    def attend(q, k, v, rule, layer):
        into[layer] = rule.weights(q[0], k[0], rows.to(q.device))
        return inner(q, k, v, rule, layer)

    return attend


def ablating(heads: Iterable[int], inner: LayerAttention = exact) -> LayerAttention:
    """`inner` with the listed heads' outputs zeroed: those heads switched off in this layer."""
    heads = sorted(set(heads))

    def attend(q, k, v, rule, layer):
        out = inner(q, k, v, rule, layer)
        out[:, heads] = 0
        return out

    return attend


class Swap:
    """The layers whose attention calls go to our functions during one forward pass (on this thread),
    and the progress of the pass, called after each layer's attention with (layers done, layers)."""

    def __init__(self, lm: LoadedModel, attend: dict[int, LayerAttention], progress=None):
        self.lm, self.attend_by_layer, self.progress, self.calls = lm, attend, progress, 0

    def attend(self, module, query, key, value, mask, kwargs):
        """What encoding._attend returns for this call: (output [batch, tokens, heads, head_dim], None)."""
        layer = getattr(module, "layer_idx", None)
        layer, self.calls = (self.calls if layer is None else layer), self.calls + 1
        fn = self.attend_by_layer.get(layer)
        if fn is None:
            out = native(module, query, key, value, mask, **kwargs)
        else:
            rule = _rule(self.lm.family, layer, module, query, mask, kwargs)
            group = query.shape[1] // key.shape[1]  # grouped-query attention: a kv head serves `group` heads
            key, value = (x.repeat_interleave(group, dim=1) for x in (key, value))
            out = (fn(query, key, value, rule, layer).transpose(1, 2).contiguous(), None)
        if self.progress:
            self.progress(self.calls, self.lm.layers)
        return out


def check_swappable(lm: LoadedModel) -> None:
    """ValueError unless the model hands its layers' attention to the interface (Bloom and Falcon attend
    inside their layers: explorer.core.inside reads them with hooks, and nothing could be replaced)."""
    if lm.family in inside.FAMILIES:
        raise ValueError(f"{lm.name} ({lm.family}) computes its attention inside its layers, not through "
                         "transformers' attention interface, so its attention cannot be replaced here")


def forward(lm: LoadedModel, ids: list[int], attend: dict[int, LayerAttention] | None = None,
            progress=None) -> torch.Tensor:
    """The last hidden states [tokens, hidden] of the model over one sequence of token ids (given as
    they enter, special tokens included), with each layer in `attend` computed by its function.

    The model's forward pass is shared by every thread: it runs under LoadedModel.lock. progress,
    if given, is called after each layer with (layers done, layers).
    """
    if lm.causal_lm is None:
        raise ValueError(f"{lm.name} is not a causal language model: it predicts no next token")
    if attend:
        check_swappable(lm)
    batch = torch.tensor([ids], device=lm.device)
    with lm.lock, torch.no_grad():
        _ACTIVE.swap = Swap(lm, attend or {}, progress)
        try:
            out = lm.model(input_ids=batch, attention_mask=torch.ones_like(batch), use_cache=False)
        finally:
            _ACTIVE.swap = None
    return out.last_hidden_state[0]


def logits(lm: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits [rows, vocabulary] of hidden states [rows, hidden], as the causal LM's own
    forward makes them: its LM head, then the scaling or soft-cap its family applies (Cohere's
    logit_scale, Granite's logits_scaling, Gemma's final soft-cap). Pass a few rows at a time."""
    model = lm.causal_lm
    with torch.no_grad():
        out = model.get_output_embeddings()(hidden)
        config = model.config.get_text_config()
        if getattr(config, "logits_scaling", None):
            out = out / config.logits_scaling
        if getattr(model, "logit_scale", None) is not None:
            out = out * model.logit_scale
        cap = getattr(config, "final_logit_softcapping", None)
        return torch.tanh(out / cap) * cap if cap else out
