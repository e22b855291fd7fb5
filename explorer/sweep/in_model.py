"""One sweep task's rows of the in-model table: a document under one causal LM at each requested length,
the model's perplexity with each mechanism swapped into every layer beside its own
(explorer.analysis.in_model), in explorer.analysis.corpus.IN_MODEL_SCHEMA's columns."""
from __future__ import annotations

from explorer.analysis import in_model as im
from explorer.core.encoding import LoadedModel, tokenize
from explorer.sweep.inputs import Document
from explorer.sweep.measure import params_json

DEFAULTS = ("window", "sinks")  # StreamingLLM's pair (in_model.PRESETS), swapped in beside the named mechanisms


def error_row(document: Document, model: str, error: str, mechanism: str = "", params: str = "{}",
              tokens: int = -1) -> dict:
    """The row of a document, or of one mechanism on it, that failed."""
    nan = float("nan")
    return {"document": document.name, "source": document.source, "tokens": tokens, "model": model,
            "mechanism": mechanism, "params": params, "layers": "", "perplexity": nan, "perplexity_dense": nan,
            "agreement": nan, "kl_mean": nan, "seconds": nan, "error": error}


def in_model_rows(document: Document, model: str, lm: LoadedModel, settings) -> list[dict]:
    """Every in-model row of one (document, model) task; a document (or a model that predicts no next
    token) that fails is one error row, a mechanism that fails one row of its own."""
    if document.error:
        return [error_row(document, model, document.error)]
    try:
        return _rows(document, model, im.load_causal(lm), settings)
    except Exception as err:  # noqa: BLE001 - any failure of one document is recorded, and the sweep goes on
        return [error_row(document, model, f"{type(err).__name__}: {err}")]


def _rows(document: Document, model: str, lm: LoadedModel, settings) -> list[dict]:
    text_tokens = len(tokenize(document.text, lm)[0])
    rows = []
    for length in sorted({min(n, lm.max_tokens) for n in settings.lengths(text_tokens)}):
        base = im.baseline(document.text, lm, length)
        for spec in settings.in_model:
            given = dict(spec.given)
            try:
                effect = im.swapped(base, spec.name, given)
            except ValueError as err:
                rows.append(error_row(document, model, str(err), spec.name, params_json(given), base.n))
                continue
            rows.append({"document": document.name, "source": document.source, "tokens": base.n, "model": model,
                         "mechanism": spec.name, "params": params_json(effect.params),
                         "layers": im.layers_text(effect.layers, lm.layers), "perplexity": effect.perplexity,
                         "perplexity_dense": effect.perplexity_dense, "agreement": float(effect.agree.mean()),
                         "kl_mean": float(effect.kl.mean()), "seconds": effect.seconds, "error": ""})
    return rows
