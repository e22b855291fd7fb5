"""A corpus sweep: every (document, model) of a corpus measured on every requested layer, head and
mechanism, into one Parquet table (explorer.sweep.table.SCHEMA), on Ray or in a plain loop.

    from explorer.sweep import sweep
    sweep(["notes/", "more.jsonl"], "out/sweep", models=["minilm", "smollm2"], mechanisms=["lsh", "segmented"])

One task is one (document, model): the model is loaded once per worker, each requested layer
encoded once, every head and mechanism measured from it (explorer.sweep.measure). Pairs the
output directory holds already are skipped, so a stopped sweep resumes where it was. With
in_model, the same tasks then fill a second table (explorer.sweep.in_model): each causal LM's
perplexity with each mechanism swapped into every layer, beside its own.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.analysis.in_model import PRESETS
from explorer.mechanisms import DENSE
from explorer.sweep.engines import HEADS, IN_MODEL_JOB, Progress, run_local, run_ray
from explorer.sweep.in_model import DEFAULTS
from explorer.sweep.inputs import Document, read_inputs
from explorer.sweep.measure import Settings, Spec
from explorer.sweep.table import SCHEMA, claim, finished, read

ENGINES = ("ray", "local")

__all__ = ["ENGINES", "SCHEMA", "Report", "Settings", "Spec", "read", "settings_of", "sweep"]


@dataclass
class Report:
    ran: int  # (document, model) tasks measured by this call
    skipped: int  # tasks the directory held already
    seconds: float


def _whole(name: str, value, low: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be a whole number of at least {low}")
    return value


def _indices(name: str, values) -> tuple[int, ...] | None:
    if values is None:
        return None
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} is empty: leave it out for all of them")
    return tuple(sorted({_whole(name, v, 0) for v in values}))


def _lengths(max_tokens) -> tuple[int, ...] | None:
    """The caps a sweep measures texts at, ascending: one whole number or several."""
    if max_tokens is None:
        return None
    caps = (max_tokens,) if isinstance(max_tokens, int) else tuple(max_tokens)
    if not caps:
        raise ValueError("max_tokens is empty: leave it out to measure whole texts")
    return tuple(sorted({_whole("max_tokens", cap, 1) for cap in caps}))


def _specs(mechanisms) -> tuple[Spec, ...]:
    specs = tuple(s if isinstance(s, Spec) else Spec.parse(s) for s in mechanisms)
    return tuple(s for s in specs if s.name != DENSE)


def settings_of(layers=None, heads=None, mechanisms=(), max_tokens=None, rows=512, in_model=None) -> Settings:
    """Settings from plain values, each checked (ValueError naming the bad one); mechanisms as
    written on the command line ("lsh", "segmented:segment_length=512"); dense is always measured;
    max_tokens one length or several (each text measured at each, see Settings.lengths); in_model:
    None for no in-model table, else the mechanisms swapped into every layer of each causal LM beside
    StreamingLLM's pair (a window of 256 alone and with 4 sinks), which alone is () or True."""
    swapped = None
    if in_model is not None and in_model is not False:
        pair = tuple(Spec(PRESETS[k][0], tuple(sorted(PRESETS[k][1].items()))) for k in DEFAULTS)
        swapped = tuple(dict.fromkeys(pair + _specs(() if in_model is True else in_model)))
    return Settings(_indices("layers", layers), _indices("heads", heads), _specs(mechanisms), _lengths(max_tokens),
                    _whole("rows", rows, 1), swapped)


def sweep(inputs=None, out="sweep", models=("minilm",), layers=None, heads=None, mechanisms=(), max_tokens=None,
          rows=512, engine="ray", address=None, workers=1, gpus_per_worker=1.0, stream=None, verbose=False,
          in_model=None) -> Report:
    """Measure every (document, model) the directory `out` does not hold yet, writing its rows there.

    inputs: files, folders, .jsonl files (see explorer.sweep.inputs), or Documents; default the
    bundled samples. max_tokens: a length or several; each text is measured at each (its first
    N tokens) and once whole when shorter than a cap; None: whole texts. engine "ray": a pool of
    `workers` actors on the Ray instance at `address` (or RAY_ADDRESS; none: a local one), each
    with `gpus_per_worker` GPUs where GPUs exist; "local": a plain loop here. Progress goes to
    `stream` (default sys.stderr); Ray's own log lines only when verbose (engines.connect). in_model:
    also the in-model table (see settings_of), each task once more after the head table's.
    """
    settings = settings_of(layers, heads, mechanisms, max_tokens, rows, in_model)
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: choose one of {ENGINES}")
    models = list(models)
    if not models or not all(isinstance(m, str) and m for m in models):
        raise ValueError(f"models={models!r}: name at least one model")
    _whole("workers", workers, 1)
    if not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker={gpus_per_worker!r} must be a number of at least 0")
    docs = inputs if inputs and all(isinstance(d, Document) for d in inputs) else read_inputs(inputs)
    out = Path(out)
    claim(out, settings.record())
    start = time.perf_counter()
    ran = skipped = 0
    for job in (HEADS, IN_MODEL_JOB) if settings.in_model else (HEADS,):
        held = finished(job.where(out), job.schema)
        tasks = [(d, m) for m in models for d in docs if (d.source, m) not in held]
        progress = Progress(len(tasks), stream or sys.stderr, "" if job is HEADS else "in the model: ")
        if tasks and engine == "ray":
            run_ray(tasks, out, settings, progress, workers, gpus_per_worker, address, job, verbose)
        elif tasks:
            run_local(tasks, out, settings, progress, job)
        if job is HEADS:
            ran, skipped = progress.done, len(docs) * len(models) - len(tasks)
    return Report(ran, skipped, time.perf_counter() - start)
