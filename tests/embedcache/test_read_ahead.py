"""ReadAhead: a background producer that keeps the order, hands errors over and never outlives its block."""

from __future__ import annotations

import threading

import pytest

from embedcache.read_ahead import ReadAhead


def producer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "read-ahead-test"]


def test_items_come_in_order_from_another_thread():
    ran_on = []

    def items():
        for k in range(50):
            ran_on.append(threading.current_thread().name)
            yield k

    with ReadAhead(items(), depth=2, name="read-ahead-test") as ahead:
        assert list(ahead) == list(range(50))
    assert set(ran_on) == {"read-ahead-test"}
    assert producer_threads() == []


def test_a_producer_error_is_raised_in_its_place():
    def items():
        yield "a"
        yield "b"
        raise LookupError("row 2 cannot be read")

    seen = []
    with pytest.raises(LookupError, match="row 2 cannot be read"):
        with ReadAhead(items(), name="read-ahead-test") as ahead:
            for item in ahead:
                seen.append(item)
    assert seen == ["a", "b"]
    assert producer_threads() == []


def test_leaving_early_stops_the_producer_and_closes_it_on_its_thread():
    closed_on = []
    produced = []

    def items():
        try:
            for k in range(10_000):
                produced.append(k)
                yield k
        finally:
            closed_on.append(threading.current_thread().name)

    with pytest.raises(RuntimeError, match="the consumer failed"):
        with ReadAhead(items(), depth=2, name="read-ahead-test") as ahead:
            for item in ahead:
                if item == 3:
                    raise RuntimeError("the consumer failed")
    assert producer_threads() == []
    assert closed_on == ["read-ahead-test"]
    assert len(produced) <= 3 + 1 + 2 + 1  # taken, the one in hand, the queue, the one it was putting


def test_it_runs_only_inside_its_block_and_needs_a_depth():
    ahead = ReadAhead(iter(range(3)))
    with pytest.raises(RuntimeError, match="inside its with block"):
        next(iter(ahead))
    ahead.close()  # never started: nothing to wait for
    with pytest.raises(ValueError, match="depth must be at least 1, not 0"):
        ReadAhead(iter(range(3)), depth=0)
