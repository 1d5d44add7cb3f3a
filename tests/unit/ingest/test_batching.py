"""Batching and backoff of the ingest worker, with a hand-driven clock."""

from __future__ import annotations

import pytest

from services.ingest.batching import Batcher
from shared.runtime import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_empty_batcher_is_never_due() -> None:
    batcher: Batcher[int] = Batcher(3, 0.1, Clock())
    assert batcher.wait_time() is None
    assert not batcher.ready()
    assert batcher.take() == []


def test_a_full_batch_is_due_at_once() -> None:
    clock = Clock()
    batcher: Batcher[int] = Batcher(3, 0.1, clock)
    for n in range(3):
        batcher.add(n)
    assert batcher.ready()
    assert batcher.take() == [0, 1, 2]
    assert len(batcher) == 0


def test_a_partial_batch_is_due_when_its_oldest_item_has_waited_max_wait() -> None:
    # Given two items, the first arrived 60 ms before the second
    clock = Clock()
    batcher: Batcher[str] = Batcher(10, 0.1, clock)
    batcher.add("a")
    clock.now += 0.06
    batcher.add("b")
    # Then the batch is due 100 ms after the first, not after the second
    assert batcher.wait_time() == pytest.approx(0.04)
    clock.now += 0.039
    assert not batcher.ready()
    clock.now += 0.002
    assert batcher.ready()
    assert batcher.take() == ["a", "b"]


def test_take_returns_at_most_max_size_oldest_first_and_keeps_the_rest() -> None:
    batcher: Batcher[int] = Batcher(2, 0.1, Clock())
    for n in range(5):
        batcher.add(n)
    assert batcher.take() == [0, 1]
    assert batcher.take() == [2, 3]
    assert len(batcher) == 1
    assert batcher.clear() == [4]
    assert len(batcher) == 0


def test_items_left_after_a_batch_get_a_fresh_window_once_it_is_acked() -> None:
    # Given 3 items, 2 taken as a batch that takes 200 ms to apply
    clock = Clock()
    batcher: Batcher[int] = Batcher(2, 0.1, clock)
    for n in range(3):
        batcher.add(n)
    batcher.take()
    clock.now += 0.2
    # When the batch is acked and the window restarted
    batcher.restart_window()
    # Then the leftover waits a full window for company instead of leaving alone at once
    assert batcher.wait_time() == pytest.approx(0.1)
    clock.now += 0.101
    assert batcher.ready()


def test_the_window_starts_with_the_first_item_after_an_empty_spell() -> None:
    clock = Clock()
    batcher: Batcher[int] = Batcher(5, 0.1, clock)
    batcher.restart_window()
    clock.now += 10
    batcher.add(1)
    assert batcher.wait_time() == pytest.approx(0.1)


def test_batcher_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Batcher(0, 0.1)
    with pytest.raises(ValueError):
        Batcher(1, -1)


def test_backoff_doubles_up_to_its_ceiling_and_starts_over_after_reset() -> None:
    # Given a backoff without randomness (the jitter returns its upper bound)
    backoff = Backoff(maximum=1.0, initial=0.1, jitter=lambda low, high: high)
    # Then the delays double until they reach the ceiling, and stay there
    delays = [backoff.next() for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    # and never overflow however long the outage
    for _ in range(5000):
        assert backoff.next() == pytest.approx(1.0)
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_backoff_jitter_keeps_at_least_half_the_delay() -> None:
    backoff = Backoff(maximum=8.0, initial=8.0, jitter=lambda low, high: low)
    assert backoff.next() == pytest.approx(4.0)
    real = Backoff(maximum=8.0, initial=8.0)
    assert all(4.0 <= real.next() <= 8.0 for _ in range(100))
