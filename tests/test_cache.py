"""The one cache (ui.cache.Store): made once under concurrency, bounded by the bytes of the
tensors it holds (shared storages counted once), errors never kept."""
import threading
import time

import pytest
import torch

from ui.cache import Store, storages


def mib(n: float) -> torch.Tensor:
    return torch.zeros(int(n * 2**20) // 4)


def test_concurrent_requests_make_a_value_once_and_waiters_see_its_progress():
    store, calls, seen = Store(2**30), [], []
    started = threading.Event()

    def make():
        calls.append(1)
        started.set()
        store.report(1, 4)
        time.sleep(0.6)
        return "value"

    results = []
    maker = threading.Thread(target=lambda: results.append(store.get("k", make)))
    maker.start()
    started.wait(5)
    waiters = [threading.Thread(target=lambda: results.append(store.get("k", make, waiting=seen.append)))
               for _ in range(3)]
    for t in waiters:
        t.start()
    for t in [maker, *waiters]:
        t.join(10)
    assert results == ["value"] * 4 and len(calls) == 1 and store.made == 1
    assert (1, 4) in seen  # the waiters were shown the maker's progress


def test_budget_in_bytes_drops_the_least_recently_used():
    store = Store(int(2.5 * 2**20))
    store.get("a", lambda: mib(1))
    store.get("b", lambda: mib(1))
    store.get("a", lambda: pytest.fail("a is held"))  # a is now the most recent
    store.get("c", lambda: mib(1))  # 3 MiB > 2.5 MiB: b, the least recently used, goes
    assert "a" in store and "c" in store and "b" not in store
    assert store.bytes == 2 * 2**20


def test_a_storage_shared_by_several_values_counts_once():
    base = mib(1)
    store = Store(int(1.5 * 2**20))
    store.get("whole", lambda: base)
    store.get("view", lambda: {"head": base[:10], "again": [base]})
    assert "whole" in store and "view" in store and store.bytes == 2**20


def test_storages_are_found_in_closures_bound_methods_and_dataclasses():
    import explorer
    from explorer.mechanisms import REGISTRY

    doc = explorer.synthetic(64, heads=1, head_dim=8)
    res = REGISTRY["lsh"].run(doc.q, doc.k, doc.v)
    found = storages(res)
    assert doc.v.untyped_storage().data_ptr() in found  # the weights closure keeps v alive: it counts
    assert sum(found.values()) > res.output.untyped_storage().nbytes()


def test_a_failed_make_is_raised_to_every_caller_and_not_kept():
    store = Store(2**30)
    gate = threading.Event()

    def fail():
        gate.wait(5)
        raise ValueError("bad input")

    errors = []

    def call():
        try:
            store.get("k", fail)
        except ValueError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert errors == ["bad input"] * 3 and "k" not in store
    assert store.get("k", lambda: 7) == 7  # asked again, it is made again


def test_slots_run_at_most_count_at_once_in_arrival_order():
    from ui.cache import Slots

    slots, order, running, peak = Slots(2), [], [0], [0]
    lock = threading.Lock()
    places = []

    def job(i):
        slots.acquire(waiting=places.append)
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(i)
        time.sleep(0.3)
        slots.acquire()  # a step inside a step: no second slot, no waiting for itself
        slots.release()
        with lock:
            running[0] -= 1
        slots.release()

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=job, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)  # arrive in order
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and order == [0, 1, 2, 3, 4]
    assert places and max(places) <= 3 and min(places) == 1  # queued ones were told their place


def test_a_background_make_shows_its_partial_result_and_stops_when_asked():
    from ui.cache import Stopped

    store, go_on = Store(2**30), threading.Event()

    def make():
        for i in range(1, 1000):
            store.report(i, 1000, partial=f"first {i}")
            go_on.wait(5)
            go_on.clear()
        return "all"

    store.background("k", make)
    flight = store.flight("k")
    assert flight is not None and store.peek("k") is None
    go_on.set()
    deadline = time.monotonic() + 5
    while flight.partial is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flight.partial.startswith("first") and flight.progress[1] == 1000
    store.background("k", lambda: pytest.fail("a second make of a key under way"))
    store.stop("k")
    go_on.set()
    assert flight.done.wait(5) and isinstance(flight.error, Stopped)
    assert "k" not in store and store.flight("k") is None


def test_a_background_make_is_kept_when_it_finishes():
    store = Store(2**30)
    store.background("k", lambda: 42)
    deadline = time.monotonic() + 5
    while store.peek("k") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.peek("k") == 42 and store.get("k", lambda: pytest.fail("made twice")) == 42


class Rerun(BaseException):
    """Stands for Streamlit's RerunException: the maker's own session reran while it was making."""


def test_a_maker_whose_session_reran_hands_the_value_to_a_waiter_not_its_rerun():
    store = Store(2**30)
    gate, started = threading.Event(), threading.Event()

    def interrupted():
        started.set()
        gate.wait(5)
        raise Rerun

    got, raised = [], []

    def maker():
        try:
            store.get("k", interrupted)
        except Rerun:
            raised.append("maker")

    def waiter():
        got.append(store.get("k", lambda: 7))

    first = threading.Thread(target=maker)
    first.start()
    started.wait(5)
    second = threading.Thread(target=waiter)
    second.start()
    time.sleep(0.3)
    gate.set()
    for t in (first, second):
        t.join(10)
    assert raised == ["maker"] and got == [7] and store.get("k", lambda: 8) == 7
