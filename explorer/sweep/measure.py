"""One sweep task: a document under one model at each requested length (its first N tokens), every
requested layer encoded once per length, every head's dense attention and mechanisms measured on the
same evenly spaced query rows.

Dense rows describe the model's own attention by its rule (doc.model_rule): the statistics pass
(explorer.core.stats.attention_stats) and the first-token score (explorer.analysis.sinks).
A mechanism runs on one head as the pages run it (causal on a causal model where it has the
switch), and is measured against dense by explorer.analysis.fidelity, one dense reference per
row chunk for every mechanism.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch

from explorer.analysis.fidelity import fidelities, weights_entropy
from explorer.analysis.sinks import THRESHOLD, dense_key_scores
from explorer.core.doc import Doc
from explorer.core.encoding import LoadedModel, encode_layers, first_tokens, tokenize
from explorer.core.rows import sample_rows
from explorer.core.stats import attention_stats
from explorer.mechanisms import DENSE, REGISTRY, Result
from explorer.sweep.inputs import Document

CHUNK = 256  # query rows whose weights are held at once


@dataclass(frozen=True)
class Spec:
    """A mechanism and the parameters a person gave it (the rest at their defaults)."""

    name: str
    given: tuple[tuple[str, object], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Spec:
        """"lsh" or "segmented:segment_length=512,overlap=64" (values read as JSON, else as text),
        checked by the mechanism's own Params: ValueError naming what is wrong."""
        name, _, rest = text.partition(":")
        if name not in REGISTRY:
            raise ValueError(f"unknown mechanism {name!r}; choose among {sorted(REGISTRY)}")
        given = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ValueError(f"{text!r}: parameters are written name=value, separated by commas")
            try:
                given[key] = json.loads(value)
            except ValueError:
                given[key] = value
        if name == DENSE and given:
            raise ValueError("dense is measured by the model's own rule and takes no parameters")
        REGISTRY[name].validate(given)
        return cls(name, tuple(sorted(given.items())))

    def params(self, causal: bool) -> dict:
        """Every parameter checked, as the mechanism runs on a model that is `causal` or not."""
        mech = REGISTRY[self.name]
        given = dict(self.given)
        if any(p.name == "causal" for p in mech.params):
            given.setdefault("causal", causal)
        return mech.validate(given)

    def __str__(self) -> str:
        return self.name + (":" + ",".join(f"{k}={json.dumps(v)}" for k, v in self.given) if self.given else "")


@dataclass(frozen=True)
class Settings:
    """What each task measures (the same for every document and model)."""

    layers: tuple[int, ...] | None = None  # None: every layer of the model
    heads: tuple[int, ...] | None = None  # None: every head
    mechanisms: tuple[Spec, ...] = ()  # measured beside dense
    max_tokens: tuple[int, ...] | None = None  # lengths measured (the start of the text); None: whole texts
    rows: int = 512  # query rows measured per text, evenly spaced
    in_model: tuple[Spec, ...] | None = None  # swapped into every layer of a causal LM (the in-model table); None: not

    def lengths(self, text_tokens: int) -> list[int]:
        """The lengths a text of `text_tokens` tokens is measured at: each cap it exceeds, and its
        whole length once when it is shorter than a cap (700 tokens under 512 1024 2048: 512, 700)."""
        return sorted({min(cap, text_tokens) for cap in self.max_tokens or (text_tokens,)})

    def record(self) -> dict:
        """Plain values, as the sweep directory keeps them (explorer.sweep.table.claim)."""
        record = {"layers": list(self.layers) if self.layers else None,
                  "heads": list(self.heads) if self.heads else None, "mechanisms": [str(s) for s in self.mechanisms],
                  "max_tokens": list(self.max_tokens) if self.max_tokens else None, "rows": self.rows}
        if self.in_model is not None:  # only then: a sweep written before the in-model table resumes as it was
            record["in_model"] = [str(s) for s in self.in_model]
        return record


def params_json(params: dict) -> str:
    """A mechanism's parameters as the tables' params column holds them: compact JSON, keys sorted."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def _check_index(what: str, chosen, count: int) -> list[int]:
    if chosen is None:
        return list(range(count))
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise ValueError(f"{what} {bad} out of range 0..{count - 1} for this model")
    return list(chosen)


def error_row(document: Document, model: str, error: str) -> dict:
    """The one row of a document that failed."""
    nan = float("nan")
    return {"document": document.name, "source": document.source, "text_tokens": -1, "tokens": -1, "model": model,
            "layer": -1, "head": -1, "mechanism": "", "params": "{}", "rows": -1, "output_rel_error": nan,
            "total_variation": nan, "topk_recall": nan, "entropy_mean": nan, "normalised_entropy": nan,
            "max_weight_mean": nan, "first_token_mass": nan, "sink": False, "seconds": nan, "error": error}


def measure(document: Document, model: str, lm: LoadedModel, settings: Settings) -> list[dict]:
    """Every row of one (document, model) task; a document that fails is one error row."""
    if document.error:
        return [error_row(document, model, document.error)]
    try:
        return _measure(document, model, lm, settings)
    except Exception as err:  # noqa: BLE001 - any failure of one document is recorded, and the sweep goes on
        return [error_row(document, model, f"{type(err).__name__}: {err}")]


def _measure(document: Document, model: str, lm: LoadedModel, settings: Settings) -> list[dict]:
    layers = _check_index("layers", settings.layers, lm.layers)
    heads = _check_index("heads", settings.heads, lm.heads)
    text_tokens = len(tokenize(document.text, lm)[0])
    rows = []
    for length in settings.lengths(text_tokens):
        # each length encoded on its own: a bidirectional model's prefix is not the start of a longer pass
        text = first_tokens(document.text, lm, length) if length < text_tokens else document.text
        for doc in encode_layers(text, lm, layers).docs:
            common = {"document": document.name, "source": document.source, "text_tokens": text_tokens,
                      "tokens": doc.n - len(lm.prefix) - len(lm.suffix), "model": model, "layer": doc.layer,
                      "error": ""}
            for head in heads:
                rows += [{**common, "head": head, **row} for row in head_rows(doc, head, settings)]
    return rows


def head_rows(doc: Doc, head: int, settings: Settings) -> list[dict]:
    """Dense's row and one row per mechanism, of one head of one layer, on the same query rows."""
    q, k, v = doc.head(head)
    queries = sample_rows(doc.n, settings.rows).to(q.device)
    rows = [_dense_row(q, k, v, doc.model_rule.of_head(head), queries)]
    rows += _mechanism_rows(doc, head, queries, settings.mechanisms)
    return [{**row, "rows": queries.numel()} for row in rows]


def _dense_row(q, k, v, rule, queries: torch.Tensor) -> dict:
    """The model's own attention on the queries: the statistics pass and the first-token score."""
    start = time.perf_counter()
    stats = attention_stats(q, k, v, rows=queries, rule=rule)
    visible = rule.allowed(queries, torch.arange(q.shape[1], device=q.device)).sum(-1)
    first = float(dense_key_scores(q, k, rows=queries, rule=rule)[0, 0])
    return {"mechanism": DENSE, "params": "{}", "output_rel_error": 0.0, "total_variation": 0.0, "topk_recall": 1.0,
            **_spread(stats.entropy[0], stats.max_weight[0], visible), **_first_token(first),
            "seconds": time.perf_counter() - start}


def _mechanism_rows(doc: Doc, head: int, queries: torch.Tensor, specs: tuple[Spec, ...]) -> list[dict]:
    """Each mechanism run on the head, measured against dense on the queries (one dense reference
    per row chunk for all of them, its time shared evenly) and on its own weights."""
    if not specs:
        return []
    q, k, v = doc.head(head)
    params = [spec.params(doc.causal) for spec in specs]
    results, seconds = {}, {}
    for i, spec in enumerate(specs):
        mech = REGISTRY[spec.name]
        start = time.perf_counter()
        results[i] = mech.run(q, k, v, **mech.for_head(params[i], head, doc.heads))
        seconds[i] = time.perf_counter() - start
    start = time.perf_counter()
    fid = fidelities(q, k, v, results, causal=doc.causal, max_rows=queries.numel())  # the same rows: sample_rows
    shared = (time.perf_counter() - start) / len(specs)
    out = []
    for i, spec in enumerate(specs):
        start = time.perf_counter()
        measured = _weights_measures(results[i], queries)
        out.append({"mechanism": spec.name, "params": params_json(params[i]),
                    "output_rel_error": float(fid[i].rel_error.mean()), "total_variation": float(fid[i].tv.mean()),
                    "topk_recall": float(fid[i].recall.mean()), **measured,
                    "seconds": seconds[i] + shared + time.perf_counter() - start})
    return out


def _spread(entropy: torch.Tensor, peak: torch.Tensor, visible: torch.Tensor) -> dict:
    """Means over rows of entropy, entropy / log(keys the row sees) (0 for a row seeing one key) and max weight."""
    visible = visible.to(entropy.dtype)
    normalised = torch.where(visible > 1, entropy / visible.clamp_min(2).log(), torch.zeros_like(entropy))
    return {"entropy_mean": float(entropy.mean()), "normalised_entropy": float(normalised.mean()),
            "max_weight_mean": float(peak.mean())}


def _first_token(score: float) -> dict:
    return {"first_token_mass": score, "sink": bool(score > THRESHOLD)}


def _weights_measures(res: Result, queries: torch.Tensor) -> dict:
    """Entropy, max weight and the first token's score (Gu et al.'s alpha_0: its weight averaged over
    the measured queries that reach it) of a mechanism's effective weights, CHUNK rows at a time.
    The entropy is fidelity's, of |w| normalised (low-rank weights can be negative)."""
    entropy, peak, visible = [], [], []
    got = seen = 0.0
    for block in queries.split(CHUNK):
        w, reach = res.weights(block)[0], res.reach(block)[0]
        entropy.append(weights_entropy(w))
        peak.append(w.amax(-1))
        visible.append(reach.sum(-1))
        got += float(w[:, 0].double().sum())
        seen += float(reach[:, 0].double().sum())
    score = got / seen if seen else 0.0
    return {**_spread(torch.cat(entropy), torch.cat(peak), torch.cat(visible)), **_first_token(score)}
