"""The states a process committed, kept for its next batch: bounded by the memory they take, not by their count.

A worker applying a month-end load touches the same customers batch after batch; keeping their folded states saves
loading a snapshot and its tail each time. Customers differ by orders of magnitude (ten invoices or ten thousand),
so a bound by count is no bound at all: the cache evicts the least recently committed states once the bytes they
hold pass ``max_bytes``.

Measuring a state means walking its objects, which costs what the state weighs; doing it at every commit would
make a batch cost the size of its customers, and doing it for every customer a sweep loads for the first time was
a third of the sweep's loading. So the first ``EXACT_FIRST`` states a cache meets are measured, then one new state
in ``SAMPLE_EVERY``; the others enter at the bytes per event the measured ones hold on average, times their own
events. A state is measured again whenever ``version + GRACE`` has doubled since its last measure (or estimate); in
between, its size is that figure scaled by the same ratio. The walk is thereby amortised to a constant per event,
and the bound holds for the cache as a whole: a customer heavier per event than the average is under-counted
until its stream doubles, one lighter is over-counted, and a sample of one state in sixteen keeps the average
honest whatever the mix of customers.
"""

from __future__ import annotations

import gc
import sys
from collections import OrderedDict
from types import FunctionType, ModuleType
from typing import Any

from shared.ledger.records import StreamKey
from shared.ledger.state import CustomerState

_SHARED = (type, ModuleType, FunctionType)  # reached from every state, owned by none
_LEAVES = frozenset({str, int, float, bool, bytes, type(None)})  # hold no references: no need to ask the collector
GRACE = 50  # events: a state is measured again once version + GRACE has doubled
EXACT_FIRST = 32  # new states measured before the average bytes per event is trusted
SAMPLE_EVERY = 16  # after those, one new state in SAMPLE_EVERY is measured, the others estimated


def footprint(root: object) -> int:
    """Bytes held by ``root`` and everything it references (classes, modules and functions excepted)."""
    seen: set[int] = set()
    stack: list[Any] = [root]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _SHARED):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if type(item) not in _LEAVES:
            stack.extend(gc.get_referents(item))
    return total


class StateCache(OrderedDict[StreamKey, CustomerState]):
    """Committed states by stream, least recently committed first, within ``max_bytes`` (see the module doc).

    It is an ordered dict for its readers (``pop`` hands a state out, which leaves the cache); :meth:`remember` is
    how states come in.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.bytes = 0
        self._charged: dict[StreamKey, int] = {}  # what each cached state counts for
        self._measured: dict[StreamKey, tuple[int, int]] = {}  # stream -> (version, bytes) at its last measure
        self._new = 0  # states met for the first time
        self._sampled_bytes = 0  # what the measured new states held ...
        self._sampled_weight = 0  # ... for this many events (version + GRACE each)

    def remember(self, state: CustomerState) -> None:
        """Put a committed state in (as the most recent), then evict the oldest while over the bound."""
        key = (state.tenant, state.customer_id)
        self.pop(key, None)
        size = self._size(key, state)
        super().__setitem__(key, state)
        self._charged[key] = size
        self.bytes += size
        while self.bytes > self.max_bytes and len(self) > 1:
            oldest = next(iter(self))
            self.pop(oldest)
            self._measured.pop(oldest, None)
        if len(self._measured) > 2 * len(self) + 1000:  # measures of states handed out and never given back
            self._measured = {k: v for k, v in self._measured.items() if k in self}

    def pop(self, key: StreamKey, *default: Any) -> Any:  # type: ignore[override]  # OrderedDict.pop's overloads
        self.bytes -= self._charged.pop(key, 0)
        return super().pop(key, *default)

    def _size(self, key: StreamKey, state: CustomerState) -> int:
        weight = state.version + GRACE
        version, measured = self._measured.get(key, (-1, 0))
        if version < 0:
            self._new += 1
            if self._new <= EXACT_FIRST or self._new % SAMPLE_EVERY == 0:
                size = footprint(state)
                self._sampled_bytes += size
                self._sampled_weight += weight
            else:
                size = self._sampled_bytes * weight // self._sampled_weight
            self._measured[key] = (state.version, size)
            return size
        if weight >= 2 * (version + GRACE):
            size = footprint(state)
            self._measured[key] = (state.version, size)
            return size
        return measured * weight // (version + GRACE)
