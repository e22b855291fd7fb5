"""A mechanism swapped into a causal LM's own layers, and what the model then predicts: StreamingLLM's
first table (perplexity with the model's attention and with each mechanism), token by token.

The model runs once with its own attention (`baseline`: the hidden states every mechanism is compared
with) and once per mechanism (`swapped`), through explorer.core.forward: in every listed layer the
mechanism gets the layer's q, k, v as the model attends with them, q scaled so that the mechanism's
1/sqrt(d) softmax uses the layer's own scale, and returns every head's output. A causal model's
prediction may never read later tokens, so each mechanism runs in its causal form; one without a
causal form is refused. Where the structure is built from the whole text (LSH's sorted buckets,
routing's clusters), which earlier keys a query sees still depends on later tokens, as when Reformer
and the Routing Transformer train: they run that way, and the result says so. `mechanism="dense"`
is the layer's own attention computed by our code (explorer.core.forward.exact), which tests the
plumbing: it reproduces the model's logits.

Scores come from the logits a chunk of rows at a time (never the whole text's: 2,048 rows of
SmolLM2's 49,152-token vocabulary would take 400 MB): each next token's negative log-likelihood
with the model's attention and with the mechanism, KL(dense || mechanism), and the most likely
next token of each.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from explorer.core import forward
from explorer.core.bundled import describe
from explorer.core.encoding import LoadedModel, _check_layers, _check_text, _tokenize, load_model
from explorer.core.rule import AttentionRule
from explorer.mechanisms import DENSE, REGISTRY

ROWS = 64  # next-token rows scored at once: two [ROWS, vocabulary] logits and their log-softmax
# What the bench, the README's table and the sweep run by default: StreamingLLM's pair (the same 256 keys
# with and without 4 sinks), then every mechanism with a causal form at its defaults (relative position
# as ALiBi, the causal LMs' own bias, rather than seeded T5 buckets)
PRESETS: dict[str, tuple[str, dict]] = {
    "window": ("sinks", {"sinks": 0, "window": 256}),
    "sinks": ("sinks", {"sinks": 4, "window": 252}),
    "segmented": ("segmented", {}),
    "hierarchical": ("hierarchical", {}),
    "memory": ("memory", {}),
    "lsh": ("lsh", {}),
    "routing": ("routing", {}),
    "relpos": ("relpos", {"kind": "alibi"}),
}
# Mechanisms whose structure is built from the whole text: which earlier keys a query sees depends on later tokens
WHOLE_TEXT = {
    "lsh": "LSH sorts the whole text's buckets into chunks, so which earlier keys a query shares a chunk with "
           "depends on later tokens (as when Reformer trains)",
    "routing": "routing clusters the whole text's queries and keys, so which earlier keys a query is routed to "
               "depends on later tokens (as when the Routing Transformer trains)",
}


def causal_form(mechanism: str) -> bool:
    """Whether a mechanism can run causally (it has the switch): low rank mixes every key into its summaries."""
    return mechanism == DENSE or any(p.name == "causal" for p in REGISTRY[mechanism].params)


def check_mechanism(mechanism: str, params: dict | None) -> dict:
    """The mechanism's parameters as it runs inside a causal model (causal on, every one checked), or
    ValueError in words: an unknown name, no causal form, causal switched off, a bad value."""
    if mechanism not in REGISTRY:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose among {sorted(REGISTRY)}")
    params = dict(params or {})
    if mechanism == DENSE:
        if params:
            raise ValueError("dense is the layer's own attention and takes no parameters")
        return {}
    if not causal_form(mechanism):
        able = ", ".join(REGISTRY[k].title for k in REGISTRY if k != DENSE and causal_form(k))
        raise ValueError(f"{REGISTRY[mechanism].title} has no causal form: its summaries mix every key, later "
                         "ones included, into what each query sees, so the model would read the very tokens it "
                         f"predicts. Pick one with a causal form: {able}")
    if params.get("causal", True) is not True:
        raise ValueError("causal=False would let each prediction read the tokens after it: inside a causal "
                         "model a mechanism runs in its causal form")
    return REGISTRY[mechanism].validate({**params, "causal": True})


def mechanism_attention(mechanism: str, params: dict, record: tuple[torch.Tensor, dict] | None = None
                        ) -> forward.LayerAttention:
    """A layer's attention by the mechanism (params as check_mechanism returns them), every head at
    once: q scaled so that its 1/sqrt(d) softmax uses the layer's own scale. One sequence (batch 1).
    It calls the mechanism's compute, not run: the parameters were checked once, and run's checks of
    q, k, v and its timing would cost every layer again (a twentieth of a layer's forward pass).
    record=(rows, into): the weights it gives those query rows kept in into[layer], [heads, len(rows),
    tokens], as forward.recording keeps the layer's own (what the needle probe reads retrieval heads from)."""
    if mechanism == DENSE:
        return forward.exact if record is None else forward.recording(*record)
    mech = REGISTRY[mechanism]

    def attend(q, k, v, rule: AttentionRule, layer: int):
        d = q.shape[-1]
        res = mech.compute(q[0].float() * (rule.scaling * math.sqrt(d)), k[0].float(), v[0].float(), **params)
        if record is not None:
            rows, into = record
            into[layer] = res.weights(rows.to(q.device))
        return res.output[None].to(q.dtype)

    return attend


@dataclass(frozen=True)
class Baseline:
    """The tokens scored and the model's hidden states with its own attention: what every mechanism on
    this text is compared with."""

    model: str
    ids: list[int]  # as they enter the model: its prefix (a BOS), then the text's first tokens
    prefix: int  # tokens before the text's
    tokens: list[str]  # the text's tokens scored
    offsets: list[tuple[int, int]]  # their character spans
    total_tokens: int  # the text's tokens in all
    hidden: torch.Tensor = field(repr=False)  # [len(ids), hidden]
    seconds: float  # the forward pass

    @property
    def n(self) -> int:
        return len(self.tokens)

    def note(self) -> str:
        """How much of the text was scored, in words."""
        if self.n == self.total_tokens:
            return f"all {self.n:,} tokens of the text scored"
        return f"the first {self.n:,} of the text's {self.total_tokens:,} tokens scored"


@dataclass
class InModel:
    """What the model predicts with a mechanism in place of its attention in `layers`, next token by next
    token ([n - 1] arrays over the text's tokens 1..n-1), beside what it predicts with its own."""

    model: str
    mechanism: str
    params: dict
    layers: tuple[int, ...]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    total_tokens: int
    nll_dense: np.ndarray  # float64: -log p(next token) with the model's own attention
    nll: np.ndarray  # float64: with the mechanism
    kl: np.ndarray  # float64: KL(dense's next-token distribution || the mechanism's), nats
    agree: np.ndarray  # bool: the same most likely next token
    top_dense: list[str]  # dense's most likely next token
    p_top_dense: np.ndarray  # and its probability
    top: list[str]  # the mechanism's
    p_top: np.ndarray
    seconds: float  # the model's forward pass with the mechanism in place
    seconds_dense: float  # with its own attention
    notes: tuple[str, ...]  # what the reader must know: tokens scored, structure built from the whole text

    @property
    def perplexity_dense(self) -> float:
        return float(np.exp(self.nll_dense.mean()))

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll.mean()))


def load_causal(model: str | LoadedModel, device: str | None = None) -> LoadedModel:
    """The model, or ValueError in words when it predicts no next token (an encoder) or attends where
    nothing can be swapped in (forward.check_swappable), before any forward pass."""
    lm = model if isinstance(model, LoadedModel) else load_model(model, device)
    if lm.causal_lm is None:
        raise ValueError(f"{describe(lm.name)} is an encoder: it reads the whole text at once and predicts no next "
                         "token, so there is nothing to swap a mechanism into. Pick smollm2, the bundled causal "
                         "language model (SmolLM2-135M).")
    forward.check_swappable(lm)
    return lm


def baseline(text: str, model: str | LoadedModel = "smollm2", max_tokens: int = 2048, device: str | None = None,
             progress=None) -> Baseline:
    """The text's first max_tokens tokens (at most one pass of the model) through the model with its own
    attention. progress(layers done, layers)."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"max_tokens={max_tokens!r} must be a whole number of at least 2 (one token to read, "
                         "one to predict)")
    _check_text(text)
    lm = load_causal(model, device)
    ids, offsets = _tokenize(lm, text)
    n = min(len(ids), max_tokens, lm.max_tokens)
    if n < 2:
        raise ValueError(f"the text holds {len(ids)} token for this model: it needs at least 2, one to read and "
                         "one to predict")
    start = time.perf_counter()
    hidden = forward.forward(lm, lm.prefix + ids[:n], progress=progress)
    return Baseline(lm.name, lm.prefix + ids[:n], len(lm.prefix), lm.tokenizer.convert_ids_to_tokens(ids[:n]),
                    [tuple(o) for o in offsets[:n]], len(ids), hidden, time.perf_counter() - start)


def swapped(base: Baseline, mechanism: str, params: dict | None = None, layers=None, progress=None,
            device: str | None = None) -> InModel:
    """The model over the baseline's tokens with `mechanism` in place of the attention of every head of
    each listed layer (None: all), scored against the baseline. progress(layers done, layers)."""
    lm = load_causal(base.model, device)
    values = check_mechanism(mechanism, params)
    layers = tuple(_check_layers(lm, layers))
    start = time.perf_counter()
    attend = mechanism_attention(mechanism, values)
    rules: dict[int, AttentionRule] = {}

    def seen(q, k, v, rule, layer):
        rules[layer] = rule
        return attend(q, k, v, rule, layer)

    hidden = forward.forward(lm, base.ids, {layer: seen for layer in layers}, progress=progress)
    seconds = time.perf_counter() - start
    scores = next_token_scores(lm, base.hidden, hidden, base.ids[base.prefix:], base.prefix)
    top_dense, top = _decode(lm, scores.pop("top_dense_ids")), _decode(lm, scores.pop("top_ids"))
    shown = {k: v for k, v in values.items() if v is not None}
    return InModel(model=base.model, mechanism=mechanism, params=shown, layers=layers, tokens=base.tokens,
                   offsets=base.offsets, total_tokens=base.total_tokens, top_dense=top_dense, top=top, **scores,
                   seconds=seconds, seconds_dense=base.seconds,
                   notes=_notes(base, mechanism, rules))


def in_model(text: str, model: str | LoadedModel = "smollm2", mechanism: str = "sinks", params: dict | None = None,
             layers=None, max_tokens: int = 2048, device: str | None = None, progress=None) -> InModel:
    """`mechanism` swapped into the model's `layers` (None: all) over the text's first max_tokens tokens,
    against the model's own attention (explorer.in_model; see the module docstring). Everything is
    checked before the model runs. progress(layers done, layers): the dense pass, then the mechanism's."""
    lm = load_causal(model, device)
    check_mechanism(mechanism, params)
    _check_layers(lm, layers)
    total = 2 * lm.layers

    def dense(done, _):
        if progress:
            progress(done, total)

    def mech(done, _):
        if progress:
            progress(lm.layers + done, total)

    base = baseline(text, lm, max_tokens, device, dense)
    return swapped(base, mechanism, params, layers, mech, device)


def next_token_scores(lm: LoadedModel, dense: torch.Tensor, hidden: torch.Tensor, ids: list[int], prefix: int) -> dict:
    """Per next token (text tokens 1..n-1, predicted from the hidden rows before them, `prefix` special
    tokens in): both negative log-likelihoods, KL(dense || mechanism), agreement, each most likely token
    id and its probability, as arrays."""
    rows = torch.arange(prefix, prefix + len(ids) - 1, device=dense.device)
    targets = torch.tensor(ids[1:], device=dense.device)
    parts: dict[str, list] = {k: [] for k in ("nll_dense", "nll", "kl", "top_dense_ids", "p_top_dense",
                                              "top_ids", "p_top")}
    for at in range(0, len(rows), ROWS):
        r, t = rows[at : at + ROWS], targets[at : at + ROWS, None]
        ref = torch.log_softmax(forward.logits(lm, dense[r]).double(), dim=-1)
        got = torch.log_softmax(forward.logits(lm, hidden[r]).double(), dim=-1)
        parts["nll_dense"].append(-ref.gather(1, t)[:, 0])
        parts["nll"].append(-got.gather(1, t)[:, 0])
        parts["kl"].append((ref.exp() * (ref - got)).sum(-1).clamp_min(0))
        for suffix, lp in (("_dense", ref), ("", got)):
            best, top = lp.max(-1)
            parts[f"p_top{suffix}"].append(best.exp())
            parts[f"top{suffix}_ids"].append(top)
    out = {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}
    out["agree"] = out["top_dense_ids"] == out["top_ids"]
    return out


def _decode(lm: LoadedModel, ids: np.ndarray) -> list[str]:
    """Each token id as the text it stands for (" the", not "Ġthe")."""
    return [lm.tokenizer.decode([int(i)]) for i in ids]


def _notes(base: Baseline, mechanism: str, rules: dict[int, AttentionRule]) -> tuple[str, ...]:
    """What the result leaves out or changes beyond the mechanism itself, in sentences."""
    notes = [base.note()[0].upper() + base.note()[1:] + "."]
    if mechanism in WHOLE_TEXT:
        notes.append(WHOLE_TEXT[mechanism][0].upper() + WHOLE_TEXT[mechanism][1:] + ".")
    if mechanism != DENSE:
        own = sorted({r.describe() for r in rules.values() if not r.is_plain})
        if own:
            notes.append("The swapped layers' own rule (" + "; ".join(own) + ") is replaced by the mechanism's "
                         "softmax at the layer's scale.")
    return tuple(notes)


# What the page's and the sweep's tables say, StreamingLLM's columns
COLUMNS = {"mechanism": "Mechanism", "params": "Parameters", "layers": "Layers", "perplexity": "Perplexity",
           "times_dense": "× dense", "agreement": "Next-token agreement", "kl_mean": "Mean KL (nats)",
           "seconds": "Seconds"}


def label(mechanism: str, params: dict) -> str:
    """A mechanism with its parameters in short, as a table or legend names it; sink + window reads as
    StreamingLLM's rows do ('Window only (256)', 'Sinks + window (4 + 252)')."""
    if mechanism == DENSE:
        return "Dense (the model's own)"
    if mechanism == "sinks":
        values = {**REGISTRY["sinks"].defaults(), **params}
        if values["sinks"] == 0:
            return f"Window only ({values['window']:,})"
        return f"Sinks + window ({values['sinks']:,} + {values['window']:,})"
    shown = param_text(mechanism, params)
    return REGISTRY[mechanism].title + (f", {shown}" if shown else "")


def param_text(mechanism: str, params: dict) -> str:
    """The parameters in short ('sinks 4, window 252'): sink + window's two always, another mechanism's
    those set apart from its defaults; causal is left out (always on inside the model)."""
    if mechanism == DENSE:
        return ""
    defaults = REGISTRY[mechanism].defaults()
    shown = {k: v for k, v in {**defaults, **params}.items() if k != "causal" and v is not None
             and (mechanism == "sinks" and k in ("sinks", "window") or v != defaults.get(k))}
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) and not isinstance(v, bool)
                     else f"{k.replace('_', ' ')} {v}" for k, v in shown.items())


def layers_text(layers, total: int) -> str:
    """Listed layers in short: 'all 30', '0–14', '3, 7, 11'."""
    layers = sorted(layers)
    if len(layers) == total:
        return f"all {total}"
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(map(str, layers))


def table(effects: list[InModel], total_layers: int) -> pd.DataFrame:
    """StreamingLLM's table: dense first, then one row per effect (all on the same tokens)."""
    first = effects[0]
    rows = [{"mechanism": label(DENSE, {}), "params": "", "layers": layers_text(range(total_layers), total_layers),
             "perplexity": first.perplexity_dense, "times_dense": 1.0, "agreement": 1.0, "kl_mean": 0.0,
             "seconds": first.seconds_dense}]
    rows += [{"mechanism": label(e.mechanism, e.params), "params": param_text(e.mechanism, e.params) or "defaults",
              "layers": layers_text(e.layers, total_layers), "perplexity": e.perplexity,
              "times_dense": e.perplexity / e.perplexity_dense, "agreement": float(e.agree.mean()),
              "kl_mean": float(e.kl.mean()), "seconds": e.seconds} for e in effects]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def loss_gap(effect: InModel, window: int = 64) -> np.ndarray:
    """[n - 1] the loss the mechanism adds per next token (its NLL minus dense's), as a trailing rolling
    mean over `window` predictions (fewer at the start), so a drift shows above the token-level noise."""
    gap = effect.nll - effect.nll_dense
    sums = np.cumsum(np.concatenate([[0.0], gap]))
    i = np.arange(1, len(gap) + 1)
    lo = np.maximum(0, i - window)
    return (sums[i] - sums[lo]) / (i - lo)


def hurt(effect: InModel, text: str, count: int = 20, context: int = 60) -> pd.DataFrame:
    """The predictions the mechanism hurts most (largest KL from dense): where the model read up to
    (`query`: the text token whose row made the prediction), the text before the next token, the token,
    each side's most likely next token with its probability, the KL and the loss added."""
    order = np.argsort(-effect.kl, kind="stable")[:count]
    rows = []
    for i in order:
        start, stop = effect.offsets[i + 1]
        rows.append({"query": int(i), "before": text[max(0, start - context) : start], "token": text[start:stop],
                     "dense": effect.top_dense[i], "p_dense": float(effect.p_top_dense[i]),
                     "mechanism": effect.top[i], "p_mechanism": float(effect.p_top[i]), "kl": float(effect.kl[i]),
                     "added_loss": float(effect.nll[i] - effect.nll_dense[i])})
    return pd.DataFrame(rows, columns=["query", "before", "token", "dense", "p_dense", "mechanism", "p_mechanism",
                                       "kl", "added_loss"])


def parse_layers(text: str, total: int) -> tuple[int, ...]:
    """Layers written as a person writes them, '0-14', '3, 7, 11' or both ('0-3, 20'), checked against
    the model's `total`; ValueError in words."""
    layers: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).replace(";", ",").split(","))):
        lo, dash, hi = part.partition("-")
        if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
            raise ValueError(f"layers {text!r}: write layer numbers and ranges such as 0-14 or 3, 7, 11")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a > b or b >= total:
            raise ValueError(f"layers {text!r}: {part} is not a range within the model's layers 0-{total - 1}")
        layers.update(range(a, b + 1))
    if not layers:
        raise ValueError("no layers named: write layer numbers and ranges such as 0-14 or 3, 7, 11")
    return tuple(sorted(layers))
