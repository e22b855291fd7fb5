"""Where a sweep's tasks run: on Ray (a pool of actors, each loading a model once, rows written
by Ray Data's write_parquet) or in a plain loop in this process. Both run a Job's measure on the same
tasks and write the same table (the head table, explorer.sweep.measure, or the in-model table,
explorer.sweep.in_model); both tell a Progress about every task done.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from explorer.core.encoding import LoadedModel, load_model
from explorer.sweep.inputs import Document
from explorer.analysis.corpus import IN_MODEL, IN_MODEL_SCHEMA, SCHEMA
from explorer.sweep.in_model import in_model_rows
from explorer.sweep.measure import Settings, measure
from explorer.sweep.table import as_table

POLL_S = 2.0  # how often the driver asks Ray's workers how far they are


@dataclass(frozen=True)
class Job:
    """What a sweep's tasks make: one table's rows of a (document, model), its schema, and its folder under
    the sweep's directory."""

    measure: Callable[[Document, str, LoadedModel, Settings], list[dict]]
    schema: pa.Schema
    folder: str = ""

    def where(self, out: Path) -> Path:
        return Path(out) / self.folder


HEADS = Job(measure, SCHEMA)  # every layer, head and mechanism
IN_MODEL_JOB = Job(in_model_rows, IN_MODEL_SCHEMA, IN_MODEL)  # mechanisms swapped into the model: perplexity


class Progress:
    """Tasks done so far, their rate and the time left, as one line for the terminal."""

    def __init__(self, total: int, stream, what: str = ""):
        self.total, self.done, self.stream, self.what = total, 0, stream, what
        self.start = time.perf_counter()

    def task_done(self) -> None:
        self.done += 1

    def line(self, done: int | None = None) -> str:
        done = self.done if done is None else done
        minutes = (time.perf_counter() - self.start) / 60
        rate = done / minutes if minutes > 0 else 0.0
        left = f", about {(self.total - done) / rate:.1f} min left" if 0 < done < self.total else ""
        return f"{self.what}{done}/{self.total} documents x models done, {rate:.1f} per minute{left}"

    def show(self, done: int | None = None) -> None:
        print(self.line(done), file=self.stream, flush=True)


class TaskCount:
    """Tasks Ray's workers finished, counted by an actor the driver asks."""

    def __init__(self):
        self.done = 0

    def add(self) -> None:
        self.done += 1

    def count(self) -> int:
        return self.done


class Models:
    """The models loaded in this process, each once."""

    def __init__(self):
        self.held: dict[str, LoadedModel] = {}

    def __call__(self, name: str) -> LoadedModel:
        if name not in self.held:
            self.held[name] = load_model(name)
        return self.held[name]


def run_local(tasks: list[tuple[Document, str]], out: Path, settings: Settings, progress: Progress,
              job: Job = HEADS) -> None:
    """Every task in a plain loop; each task's rows written at once as a part file (so an interrupted
    sweep keeps what it finished)."""
    models = Models()
    job.where(out).mkdir(parents=True, exist_ok=True)
    for document, model in tasks:
        rows = job.measure(document, model, models(model), settings)
        pq.write_table(as_table(rows, job.schema), job.where(out) / f"local-{uuid.uuid4().hex}.parquet")
        progress.task_done()
        progress.show()


class Measurer:
    """Ray Data's callable class: one per actor, so each worker loads a model once."""

    def __init__(self, settings: Settings, progress, threads: int, job: Job = HEADS):
        torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))  # not more than this node has
        self.settings, self.progress, self.models, self.job = settings, progress, Models(), job

    def __call__(self, batch):
        rows = []
        for item in batch.to_pylist():
            document = Document(item["name"], item["source"], item["text"], item["error"])
            rows += self.job.measure(document, item["model"], self.models(item["model"]), self.settings)
            self.progress.add.remote()
        return as_table(rows, self.job.schema)


def _items(tasks: list[tuple[Document, str]]) -> list[dict]:
    return [{"name": d.name, "source": d.source, "text": d.text, "error": d.error, "model": m} for d, m in tasks]


def connect(address: str | None = None, verbose: bool = False):
    """Ray, started here when no instance is running (a local one unless address names a cluster;
    RAY_ADDRESS is read by Ray itself). Unless verbose, Ray's Python loggers ("ray", "ray.data")
    print errors only: a sweep that succeeds has nothing of theirs to say, and a failure reaches
    the caller as an exception either way. verbose: every line, the workers' output included."""
    import ray
    import ray.data  # noqa: F401 - configures its logger on import, so its level is set after

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.DEBUG if verbose else logging.ERROR)  # DEBUG: Ray Data's own
    return ray


def run_ray(tasks: list[tuple[Document, str]], out: Path, settings: Settings, progress: Progress,
            workers: int, gpus_per_worker: float, address: str | None = None, job: Job = HEADS,
            verbose: bool = False) -> None:
    """Every task on a pool of `workers` Ray actors, the rows written by write_parquet into the job's
    folder of `out` (verbose: Ray's own log lines too, see connect)."""
    ray = connect(address, verbose)
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 1.0)
    counter = ray.remote(TaskCount).options(num_cpus=0).remote()
    gpus = gpus_per_worker if resources.get("GPU", 0) > 0 else 0
    # a worker's share of the CPUs, one share left to Ray Data's own tasks (writing): a fraction on small machines
    share = cpus / (workers + 1)
    per_worker = share if share < 1 else float(int(share))
    context = ray.data.DataContext.get_current()  # the sweep's own progress line stands for Ray Data's
    context.enable_progress_bars, context.print_on_execution_start = False, False
    stop = threading.Event()
    shown = threading.Thread(target=_show, args=(ray, counter, progress, stop), daemon=True)
    shown.start()
    try:
        with warnings.catch_warnings():
            # max_restarts=0: Ray Data's default (restart forever, retry forever) would loop on a document that
            # kills its worker, and it logs a spurious core_worker.cc error on every sweep (ray-project/ray#57733);
            # Ray 2.60 takes it only as a deprecated keyword, the one way to set it
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ray.data.from_items(_items(tasks)).map_batches(
                Measurer, fn_constructor_kwargs={"settings": settings, "progress": counter, "job": job,
                                                 "threads": max(1, int(cpus // workers))},
                batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=per_worker, max_restarts=0, **({"num_gpus": gpus} if gpus else {}),
            ).write_parquet(str(job.where(out)))
    finally:
        stop.set()
        shown.join()
        progress.done = ray.get(counter.count.remote())
        ray.kill(counter)
    progress.show()


def _show(ray, counter, progress: Progress, stop: threading.Event) -> None:
    """Print the workers' progress whenever it moves, until told to stop."""
    last = 0
    while not stop.wait(POLL_S):
        done = ray.get(counter.count.remote())
        if done != last:
            progress.show(done)
            last = done
