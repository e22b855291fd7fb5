"""The dense pass of a long text made in the background, so its page shows it as it refines.

`compute.dense(run, grid)` waits for the exact statistics; `now(run, grid)` does not: it starts
the pass (or finds it under way, started by this session or another) and returns what it has so
far. The pass (compute.dense_pass) streams the rows in explorer.core.rows.preview_first's
order: compute.PREVIEW_ROWS evenly spaced queries first, exact for those rows, then every other
row in order; it ends equal to the pass in order and is kept under compute.dense's key, so every
page gets it. Leaving the page leaves the pass running; `stop` ends it and keeps what it had,
shown as stopped until the person asks for the rest (`resume`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from explorer.core.stats import AttentionStats
from ui import compute
from ui.cache import Stopped, heavy_step, store
from ui.state import Run

WAIT_S = 1.5  # how long a page waits before drawing what the pass has: a short text draws exact at once
REFRESH_S = 3.0  # how often a refining page redraws: drawing holds the GIL the pass needs, so not often


@dataclass(frozen=True)
class Progress:
    """How far a dense pass is: `shown` rows in the statistics drawn, `done` of `total` computed."""

    shown: int
    done: int
    total: int
    seconds: float
    stopped: bool = False

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def label(self) -> str:
        """'Preview: N of n queries …' with the rate and the time left, or where it stopped."""
        head = f"Preview: {self.shown:,} of {self.total:,} queries (exact for those rows: " \
               f"{min(self.shown, compute.PREVIEW_ROWS):,} spread evenly over the text, the rest in text order)"
        if self.stopped:
            return head + f". Stopped after {self.seconds:.0f} s."
        if not self.rate:
            return head + ", starting…"
        left = (self.total - self.done) / self.rate
        return head + f" · {self.rate:,.0f} queries/s · about {left:,.0f} s left"


def _stopped_key(run: Run, grid: int) -> tuple:
    return ("dense stopped", *compute.dense_key(run, grid)[1:])


def _start(run: Run, grid: int) -> None:
    """The pass on a thread of its own (in a hosted demo, once a worker is free: ui.hosting)."""
    key = compute.dense_key(run, grid)
    shared = store()

    def make() -> AttentionStats:
        try:
            with heavy_step():
                return compute.dense_pass(run, grid)
        except Stopped:
            flight = shared.flight(key)
            if flight is not None and flight.partial is not None:
                partial = flight.partial
                done = partial.lse.shape[1]
                held = (partial, Progress(done, done, run.doc.n, time.perf_counter() - flight.started, stopped=True))
                shared.get(_stopped_key(run, grid), lambda: held)
            raise

    shared.background(key, make, name="dense pass")


def now(run: Run, grid: int) -> tuple[AttentionStats | None, Progress | None]:
    """(the exact statistics, None), or (what the pass has so far or None, its Progress)."""
    shared = store()
    key = compute.dense_key(run, grid)
    held = shared.peek(key)
    if held is not None:
        return held, None
    flight = shared.flight(key)
    if flight is None:
        stopped = shared.peek(_stopped_key(run, grid))
        if stopped is not None:
            return stopped
        _start(run, grid)
        flight = shared.flight(key)
    if flight is not None and flight.partial is None:  # just started, here or elsewhere (another visitor, the
        flight.done.wait(WAIT_S)  # warm-up): nothing to draw yet, and a short pass ends exact meanwhile
    if flight is None or flight.done.is_set():  # finished, or failed: compute.dense then says why
        return compute.dense(run, grid), None
    partial = flight.partial
    done, total = flight.progress or (0, run.doc.n)
    shown = 0 if partial is None else partial.lse.shape[1]
    return partial, Progress(shown, done, total, time.perf_counter() - flight.started)


def stop(run: Run, grid: int) -> None:
    """End the pass at its next block, keeping what it has."""
    store().stop(compute.dense_key(run, grid))


def resume(run: Run, grid: int) -> None:
    """After a stop: forget the stopped statistics and run the whole pass again."""
    store().discard(_stopped_key(run, grid))
    _start(run, grid)
