"""When to apply a batch: pure logic, no broker, no database.

The worker collects deliveries into a :class:`Batcher` and applies a batch when it is full or when its oldest
message has waited long enough, whichever comes first: big transactions when the queue is busy, low latency when it
is quiet. A batch never holds more than ``max_size`` deliveries. Retries of transient failures (database down,
broker unreachable) are not paced here but by the ``Backoff`` every worker shares.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]


class Batcher(Generic[T]):
    """A FIFO buffer that says when its head is due: ``max_size`` items, or ``max_wait`` seconds of filling.

    The wait is counted from the oldest item's arrival, or from the last :meth:`restart_window` if that is later:
    the worker calls it once a batch is acked, so items that arrived while that batch was being applied get a full
    window to be joined by others instead of leaving at once as a small batch (the broker only sends more once the
    previous batch is acked).
    """

    def __init__(self, max_size: int, max_wait: float, clock: Clock = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_size = max_size
        self.max_wait = max_wait
        self._clock = clock
        self._items: deque[T] = deque()
        self._since = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        if not self._items:
            self._since = self._clock()
        self._items.append(item)

    def wait_time(self) -> float | None:
        """Seconds until a batch is due; 0 if one is due now; None if empty (nothing will become due by itself)."""
        if not self._items:
            return None
        if len(self._items) >= self.max_size:
            return 0.0
        return max(0.0, self._since + self.max_wait - self._clock())

    def ready(self) -> bool:
        return self.wait_time() == 0.0

    def take(self) -> list[T]:
        """The oldest items, at most ``max_size``, in arrival order (whether or not a batch is due)."""
        count = min(self.max_size, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    def restart_window(self) -> None:
        """Give the items already waiting a full ``max_wait`` from now to be joined by others."""
        self._since = self._clock()

    def clear(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items
