"""The sweep's needle table (`python -m explorer.sweep ... --needle`): every (document, model) asked
back a fact planted at each position, with the model's own attention and each mechanism swapped in
(explorer.needle_probe), one row per (document, model, mechanism, position), in the table of its
own that explorer.analysis.needle_corpus declares (the folder "_needle" inside --out).

Its tasks run in this process after the head table's, one (document, model) at a time, each written
as it ends, so a stopped sweep resumes where it was; the settings are kept beside the rows and a
resumed sweep must ask the same. A mechanism without a causal form (low rank) is left out of this
table: inside a causal model it would read the answer it predicts.
"""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from explorer.analysis import needle_probe as npb
from explorer.analysis.in_model import causal_form
from explorer.analysis.needle_corpus import SCHEMA, folder
from explorer.core.encoding import LoadedModel
from explorer.sweep.engines import Models, Progress
from explorer.sweep.inputs import Document, read_inputs
from explorer.sweep.measure import Spec, params_json
from explorer.sweep.table import as_table, claim, finished

POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)  # fewer than the library's eleven: one forward pass each, per mechanism
MAX_TOKENS = 2048  # the prompt's length when the sweep names no --max-tokens


@dataclass(frozen=True)
class NeedleSettings:
    """What every (document, model) of the needle table is asked (the same for all of them)."""

    fact: str = npb.FACT
    question: str = npb.QUESTION
    answer: str = npb.ANSWER
    positions: tuple[float, ...] = POSITIONS
    max_tokens: int = MAX_TOKENS
    mechanisms: tuple[Spec, ...] = ()  # swapped in beside the model's own attention, each with a causal form

    def record(self) -> dict:
        return {"fact": self.fact, "question": self.question, "answer": self.answer, "positions": list(self.positions),
                "prompt_tokens": self.max_tokens, "mechanisms": [str(s) for s in self.mechanisms]}


def needle_settings(fact=None, question=None, answer=None, positions=None, max_tokens=None, mechanisms=()) \
        -> tuple[NeedleSettings, list[str]]:
    """Settings from plain values (None: the bundled default), each checked (ValueError naming the bad
    one), and the mechanisms left out for having no causal form."""
    specs = [s if isinstance(s, Spec) else Spec.parse(s) for s in mechanisms]
    kept = tuple(s for s in specs if s.name != npb.DENSE and causal_form(s.name))
    left = sorted({s.name for s in specs if s.name != npb.DENSE and not causal_form(s.name)})
    caps = [max_tokens] if isinstance(max_tokens, int) else list(max_tokens or [])
    chosen = NeedleSettings(npb.FACT if fact is None else fact, npb.QUESTION if question is None else question,
                            npb.ANSWER if answer is None else answer,
                            tuple(float(p) for p in (POSITIONS if positions is None else positions)),
                            max(caps) if caps else MAX_TOKENS, kept)
    npb.check_parts(chosen.fact, chosen.question, chosen.answer, chosen.positions)
    return chosen, left


def error_row(document: Document, model: str, error: str) -> dict:
    nan = float("nan")
    return {"document": document.name, "source": document.source, "model": model, "mechanism": "", "params": "{}",
            "position": nan, "token_position": -1, "tokens": -1, "text_tokens": -1, "answer_prob": nan,
            "answer_rank": -1, "retrieval_heads": [], "retrieval_scores": [], "seconds": nan, "error": error}


def rows_of(probe: npb.NeedleProbe, document: Document, model: str, params: str) -> list[dict]:
    """One row per position of a probe; heads listed by retrieval score, those above npb.RETRIEVAL_PASS."""
    out = []
    for i, position in enumerate(probe.positions):
        score = probe.retrieval[i]
        passing = np.argwhere(score > npb.RETRIEVAL_PASS)
        passing = sorted(passing.tolist(), key=lambda lh: -score[lh[0], lh[1]])
        out.append({"document": document.name, "source": document.source, "model": model,
                    "mechanism": probe.mechanism or npb.DENSE, "params": params, "position": float(position),
                    "token_position": int(probe.token_positions[i]), "tokens": int(probe.tokens[i]),
                    "text_tokens": probe.text_tokens, "answer_prob": float(probe.answer_prob[i]),
                    "answer_rank": int(probe.answer_rank[i]), "retrieval_heads": [f"{a}.{b}" for a, b in passing],
                    "retrieval_scores": [float(score[a, b]) for a, b in passing],
                    "seconds": probe.seconds / len(probe.positions), "error": ""})
    return out


def measure(document: Document, model: str, lm: LoadedModel, settings: NeedleSettings) -> list[dict]:
    """Every row of one (document, model): the model's own attention, then each mechanism; a document
    or model that fails (an encoder, a text too short for the fact) is one error row."""
    if document.error:
        return [error_row(document, model, document.error)]
    try:
        rows = []
        for spec in (None, *settings.mechanisms):
            params = {} if spec is None else spec.params(True)
            probe = npb.needle_probe(document.text, settings.fact, settings.question, settings.answer,
                                     settings.positions, lm, None if spec is None else spec.name, params or None,
                                     max_tokens=settings.max_tokens)
            rows += rows_of(probe, document, model, params_json(probe.params))
        return rows
    except Exception as err:  # noqa: BLE001 - any failure of one document is recorded, and the sweep goes on
        return [error_row(document, model, f"{type(err).__name__}: {err}")]


def sweep_needle(inputs=None, out="sweep", models=("minilm",), settings: NeedleSettings | None = None,
                 stream=None) -> tuple[int, int, float]:
    """Measure every (document, model) the needle table in `out` does not hold yet; progress to `stream`
    (default sys.stderr). Returns (pairs measured, pairs held already, seconds)."""
    settings = settings or NeedleSettings()
    docs = inputs if inputs and all(isinstance(d, Document) for d in inputs) else read_inputs(inputs)
    where = folder(out)
    claim(where, settings.record())
    held = finished(where, SCHEMA)
    tasks = [(d, m) for m in models for d in docs if (d.source, m) not in held]
    progress, loaded = Progress(len(tasks), stream or sys.stderr), Models()
    start = time.perf_counter()
    for document, model in tasks:
        try:
            lm = loaded(model)
        except ValueError as err:
            rows = [error_row(document, model, str(err))]
        else:
            rows = measure(document, model, lm, settings)
        pq.write_table(as_table(rows, SCHEMA), where / f"needle-{uuid.uuid4().hex}.parquet")
        progress.task_done()
        progress.show()
    return len(tasks), len(docs) * len(models) - len(tasks), time.perf_counter() - start
