"""ui.refine: the dense pass in the background shows a preview first, ends exactly equal to the
pass in order, and a stop keeps what it had until the rest is asked for."""
import threading
import time

import torch

import explorer
from explorer.core.stats import attention_stats
from ui import compute, refine
from ui.cache import store
from ui.state import Encoding, Run


def run_of(n: int, seed: int) -> Run:
    doc = explorer.synthetic(n=n, heads=1, head_dim=16, seed=seed)
    return Run(Encoding(text_key=f"refine test {n} {seed}"), head=0, doc=doc)


def wait_for(cond, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_long_pass_shows_a_preview_then_equals_the_pass_in_order(monkeypatch):
    monkeypatch.setattr(refine, "WAIT_S", 0.0)
    monkeypatch.setattr(compute, "SNAPSHOT_S", 0.0)  # a snapshot after every block
    gate = threading.Event()
    real = compute.stream_stats

    def slowed(*a, **k):  # the pass waits after its first blocks until the test has looked
        for i, step in enumerate(real(*a, **k)):
            yield step
            if i == 1:
                gate.wait(60)

    monkeypatch.setattr(compute, "stream_stats", slowed)
    run = run_of(6000, 1)
    stats, progress = refine.now(run, 32)
    wait_for(lambda: refine.now(run, 32)[0] is not None)
    stats, progress = refine.now(run, 32)
    assert progress is not None and not progress.stopped
    assert progress.shown == compute.PREVIEW_ROWS and progress.total == 6000
    assert "Preview: 512 of 6,000 queries" in progress.label() and "s left" in progress.label()
    q, k, v = compute.qkv(run)
    preview = attention_stats(q, k, v, grid=32, rows=stats.rows)
    torch.testing.assert_close(stats.lse, preview.lse)
    assert not stats.map.mean.isnan().any()  # the preview reaches every row bin
    gate.set()
    wait_for(lambda: refine.now(run, 32)[1] is None)
    exact, _ = refine.now(run, 32)
    full = attention_stats(q, k, v, grid=32)
    assert exact.rows is None
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        torch.testing.assert_close(getattr(exact, name), getattr(full, name))
    torch.testing.assert_close(exact.map.mean, full.map.mean)
    assert compute.dense(run, 32) is exact  # every page gets the same result, made once


def test_stop_keeps_the_rows_done_and_resume_runs_the_rest(monkeypatch):
    monkeypatch.setattr(refine, "WAIT_S", 0.0)
    monkeypatch.setattr(compute, "SNAPSHOT_S", 0.0)
    gate = threading.Event()
    real = compute.stream_stats

    def held(*a, **k):
        for i, step in enumerate(real(*a, **k)):
            yield step
            if i >= 1:
                gate.wait(60)

    monkeypatch.setattr(compute, "stream_stats", held)
    run = run_of(6000, 2)
    refine.now(run, 32)
    wait_for(lambda: refine.now(run, 32)[0] is not None)
    refine.stop(run, 32)
    gate.set()
    wait_for(lambda: store().flight(compute.dense_key(run, 32)) is None)
    stats, progress = refine.now(run, 32)
    assert progress.stopped and "Stopped" in progress.label() and stats.rows.numel() < 6000
    assert compute.dense_key(run, 32) not in store()  # a stopped pass is never taken for the exact one
    monkeypatch.setattr(compute, "stream_stats", real)
    refine.resume(run, 32)
    wait_for(lambda: refine.now(run, 32)[1] is None)
    assert refine.now(run, 32)[0].rows is None


def test_a_short_text_is_exact_at_once():
    stats, progress = refine.now(run_of(300, 3), 16)
    assert progress is None and stats.rows is None
