"""The one cache idiom of the app: `cached(key, make, label)`.

Everything computed from a text (the model, encodings, dense passes, mechanism results,
fidelity, every page's analyses) goes through `cached`. The key is a tuple of plain,
hashable values, by convention a name and the ui.state.Run handle it is about, then the
other arguments: ("fidelity", run), ("sorted map", run, round, span, grid). Pages define no
caches of their own and keep no results in session state.

The store is one per process, shared by every session:
- a key is made once: sessions that ask for it while it is being made wait for that one
  computation (and see its progress) instead of starting their own; when the maker's own session
  leaves it (a rerun or stop of that session, which Streamlit raises inside the make), the
  flight is abandoned and a waiter makes the value itself: one session's control flow never
  reaches another session's script;
- it is bounded by bytes, not entries: the tensors values hold (storages counted once, however
  many values share them) may take EXPLORER_CACHE_MB megabytes (default 4096); past that, the
  least recently used values are dropped, and are made again, with the same progress and error
  handling as the first time, when next asked for;
- it is safe to read while another session writes (one lock guards the index; values are
  made outside it).

`label` names a step that may take seconds: a progress bar shows while it is made (or waited
for), fed by `report(done, total)` calls that the step's code makes, e.g. by passing
`progress=report` to a library function. In a hosted demo (ui.hosting) such steps also queue:
at most EXPLORER_WORKERS of them run at once, and a waiting visitor sees how many are ahead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ui import hosting

T = TypeVar("T")
BUDGET_ENV = "EXPLORER_CACHE_MB"
DEFAULT_BUDGET_MB = 4096


def storages(value: Any) -> dict[int, int]:
    """Storage address -> bytes of every tensor, array and frame that `value` holds, looked for
    through containers, dataclasses, objects' attributes, bound methods and closures."""
    found: dict[int, int] = {}
    seen: set[int] = set()
    stack = [value]
    while stack:
        x = stack.pop()
        if id(x) in seen or x is None or isinstance(x, (str, bytes, int, float, bool, type, types.ModuleType)):
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            s = x.untyped_storage()
            found[s.data_ptr()] = s.nbytes()
        elif isinstance(x, np.ndarray):
            base = x if x.base is None else x.base
            found[id(base)] = int(getattr(base, "nbytes", x.nbytes))
        elif isinstance(x, pd.DataFrame):
            found[id(x)] = int(x.memory_usage(index=True).sum())
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(x)
        elif isinstance(x, types.MethodType):
            stack.extend((x.__self__, x.__func__))
        elif isinstance(x, types.FunctionType):
            stack.extend(cell.cell_contents for cell in x.__closure__ or () if _filled(cell))
        elif isinstance(x, torch.nn.Module):
            stack.extend(x.state_dict().values())
        elif dataclasses.is_dataclass(x):
            stack.extend(getattr(x, f.name) for f in dataclasses.fields(x))
        elif hasattr(x, "__dict__"):
            stack.extend(vars(x).values())
    return found


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:  # an empty cell: the variable was not bound yet
        return False


class Stopped(Exception):
    """A value's making was stopped on request (Store.stop): nothing is kept."""


class _Flight:
    """A value being made: waiters block on `done` and read the maker's progress and partial result."""

    def __init__(self, listener: Callable[[tuple[int, int]], None] | None):
        self.done = threading.Event()
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.progress: tuple[int, int] | None = None
        self.partial: Any = None  # what the maker has so far, when it offers one (a refining result)
        self.listener = listener  # the maker's own display, called in the maker's thread
        self.error: Exception | None = None
        self.abandoned = False  # the maker's session left (not an error of the value): a waiter takes over
        self.value: Any = None


class Slots:
    """At most `count` heavy computations at once, the others waiting in arrival order.

    A thread that holds a slot may ask again (a step inside a step) without waiting for itself.
    """

    def __init__(self, count: int):
        self.count = count
        self._cond = threading.Condition()
        self._queue: list[int] = []  # tickets waiting, oldest first
        self._running = 0
        self._next = 0
        self._local = threading.local()

    def acquire(self, waiting: Callable[[int], None] | None = None) -> None:
        """Take a slot; waiting(place in the queue, from 1) is called about every 0.2 s while queued."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            return
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            self._queue.append(ticket)
            while self._running >= self.count or self._queue[0] != ticket:
                if waiting:
                    self._cond.release()
                    try:
                        waiting(self._queue.index(ticket) + 1)
                    finally:
                        self._cond.acquire()
                self._cond.wait(0.2)
            self._queue.pop(0)
            self._running += 1
            self._cond.notify_all()
        self._local.depth = 1

    def release(self) -> None:
        self._local.depth -= 1
        if self._local.depth:
            return
        with self._cond:
            self._running -= 1
            self._cond.notify_all()


class Store:
    """Values made once per key and shared, least recently used dropped beyond `budget` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._held: dict[Hashable, dict[int, int]] = {}  # key -> its storages
        self._refs: dict[int, int] = {}  # storage -> how many values hold it
        self._sizes: dict[int, int] = {}
        self._flights: dict[Hashable, _Flight] = {}
        self._local = threading.local()
        self.made = 0  # values made since the start (a test reads it)

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def get(self, key: Hashable, make: Callable[[], T],
            progress: Callable[[tuple[int, int]], None] | None = None,
            waiting: Callable[[tuple[int, int] | None], None] | None = None) -> T:
        """The value of `key`, made by make() unless it is held or already being made.

        progress(done, total) follows this thread's own make (its `report` calls);
        waiting(progress or None) is called about every 0.2 s while another thread makes it.
        """
        while True:
            held, flight, mine = self._claim(key, progress)
            if flight is None:
                return held
            if mine:
                return self._make(key, flight, make)
            while not flight.done.wait(0.2):
                if waiting:
                    waiting(flight.progress)
            if flight.error is not None:
                raise flight.error
            if not flight.abandoned:
                return flight.value

    def _claim(self, key, progress) -> tuple[Any, _Flight | None, bool]:
        """(the held value, None, _) or (_, the flight, whether this caller makes it)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key], None, False
            flight = self._flights.get(key)
            if flight is not None:
                return None, flight, False
            flight = self._flights[key] = _Flight(progress)
            return None, flight, True

    def _make(self, key, flight: _Flight, make: Callable[[], T]) -> T:
        outer = getattr(self._local, "flight", None)
        self._local.flight = flight
        try:
            flight.value = make()
        except Exception as err:
            flight.error = err
            raise
        except BaseException:  # the maker's own session reran or stopped: its exception is for it alone
            flight.abandoned = True
            raise
        finally:
            self._local.flight = outer
            with self._lock:
                del self._flights[key]
                if flight.error is None and not flight.abandoned:
                    self._keep(key, flight.value)
            flight.done.set()
        return flight.value

    def report(self, done: int, total: int, partial: Any = None) -> None:
        """Progress of the value this thread is making, with what it has so far (ignored outside a make).

        Raises Stopped when someone asked the make to stop (Store.stop)."""
        flight = getattr(self._local, "flight", None)
        if flight is None:
            return
        if flight.stop.is_set():
            raise Stopped
        flight.progress = (int(done), int(total))
        if partial is not None:
            flight.partial = partial
        if flight.listener is not None:
            flight.listener(flight.progress)

    def background(self, key: Hashable, make: Callable[[], T], name: str = "explorer job") -> None:
        """Make `key` on a thread of its own, unless it is held or being made already: the asker
        goes on, and reads the progress and partial result with `flight`."""
        _, flight, mine = self._claim(key, None)
        if flight is None or not mine:
            return

        def work():
            try:
                self._make(key, flight, make)
            except BaseException:  # noqa: BLE001 - kept on the flight for whoever looks or waits
                pass

        threading.Thread(target=work, name=name, daemon=True).start()

    def flight(self, key: Hashable) -> _Flight | None:
        """The making of `key` under way, or None (not started, done, failed or stopped)."""
        with self._lock:
            return self._flights.get(key)

    def stop(self, key: Hashable) -> None:
        """Ask the making of `key` to stop at its next report."""
        flight = self.flight(key)
        if flight is not None:
            flight.stop.set()

    def peek(self, key: Hashable) -> Any:
        """The value of `key` if it is held (without making it), else None."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return None

    def discard(self, key: Hashable) -> None:
        """Forget the value of `key`, if held: the next ask makes it again."""
        with self._lock:
            if key in self._values:
                self._drop(key)

    def _keep(self, key, value) -> None:
        held = storages(value)
        self.made += 1
        self._values[key] = value
        self._held[key] = held
        for ptr, size in held.items():
            self._refs[ptr] = self._refs.get(ptr, 0) + 1
            self._sizes[ptr] = size
        while len(self._values) > 1 and sum(self._sizes.values()) > self.budget:
            self._drop(next(iter(self._values)))

    def _drop(self, key) -> None:
        del self._values[key]
        for ptr in self._held.pop(key):
            self._refs[ptr] -= 1
            if not self._refs[ptr]:
                del self._refs[ptr], self._sizes[ptr]

    def clear(self) -> None:
        with self._lock:
            for key in list(self._values):
                self._drop(key)


def budget_bytes() -> int:
    """EXPLORER_CACHE_MB as bytes, or the default; a bad value is a clear error at start."""
    raw = os.environ.get(BUDGET_ENV, str(DEFAULT_BUDGET_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1
    if not mb > 0:
        raise ValueError(f"{BUDGET_ENV}={raw!r} must be a positive number of megabytes")
    return int(mb * 2**20)


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The process-wide store (st.cache_resource only holds this one object)."""
    return Store(budget_bytes())


@st.cache_resource(show_spinner=False)
def slots(count: int) -> Slots:
    """The process-wide queue of heavy steps of a hosted demo (ui.hosting)."""
    return Slots(count)


@contextlib.contextmanager
def heavy_step(waiting: Callable[[int], None] | None = None):
    """In a hosted demo, hold one of its worker slots (ui.hosting) for the step, in turn; elsewhere
    nothing. waiting(place in the queue) while queued."""
    workers = hosting.workers()
    queue = slots(workers) if workers else None
    if queue:
        queue.acquire(waiting)
    try:
        yield
    finally:
        if queue:
            queue.release()


def report(done: int, total: int) -> None:
    """Tell the step being made how far it is: pass as `progress=report` to library functions."""
    store().report(done, total)


def cached(key: tuple, make: Callable[[], T], label: str | None = None) -> T:
    """The value for `key`, made by make() once per process (see the module docstring).

    label: a step that may take seconds; a bar with counts shows while it is made or waited for
    (not outside a session's script, e.g. in the start-up warm-up, where there is no page).
    """
    shared = store()
    if label is None or key in shared or get_script_run_ctx(suppress_warning=True) is None:
        return shared.get(key, make)
    bar = st.empty()
    started = time.perf_counter()

    def show(progress: tuple[int, int] | None, who: str = "") -> None:
        if progress is None:
            bar.progress(0.0, text=f"{label}{who}…")
            return
        done, total = progress
        elapsed = time.perf_counter() - started
        left = f", about {elapsed / done * (total - done):.0f} s left" if done and elapsed > 2 else ""
        bar.progress(min(1.0, done / max(1, total)), text=f"{label}{who}: {done:,} of {total:,}{left}")

    def make_shown() -> T:
        show(None)
        return make()

    def queued(ahead: int) -> None:
        bar.progress(0.0, text=f"{label}: waiting for a free worker, place {ahead} in the queue")

    try:  # the slot taken before the value is asked for, so a maker never waits for a slot (no deadlock)
        with heavy_step(queued):
            return shared.get(key, make_shown, progress=show, waiting=lambda p: show(p, " (already under way)"))
    finally:
        bar.empty()


def computation(label: str | Callable[..., str] | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A function whose value is cached under its name and its arguments: pages call names, never
    spell keys. Arguments must be hashable (a Run, numbers, strings, tuples); dicts and lists are
    frozen into tuples. label: as `cached`'s, a progress bar while the value is made (or a function of
    the arguments that says it). fn.made(...)
    says whether the value for those arguments is made already (a page may offer it without a click)."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        name = f"{Path(fn.__code__.co_filename).stem}.{fn.__qualname__}"

        def key(*args, **kwargs) -> tuple:
            return (name, *(freeze(a) for a in args), *((k, freeze(v)) for k, v in sorted(kwargs.items())))

        @functools.wraps(fn)
        def call(*args, **kwargs) -> T:
            said = label(*args, **kwargs) if callable(label) else label
            return cached(key(*args, **kwargs), lambda: fn(*args, **kwargs), said)

        call.made = lambda *args, **kwargs: key(*args, **kwargs) in store()  # made already (by anyone)
        return call

    return wrap


def freeze(value: Any) -> Any:
    """A value as a hashable key part: dicts and lists become tuples, recursively."""
    if isinstance(value, dict):
        return tuple((k, freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
