"""The states a process committed, kept for its next batch: bounded by the memory they take, not by their count.

A worker applying a month-end load touches the same customers batch after batch; keeping their folded states saves
loading a snapshot and its tail each time. Customers differ by orders of magnitude (ten invoices or ten thousand),
so a bound by count is no bound at all: the cache evicts the least recently committed states once the bytes they
hold pass ``max_bytes``.

Measuring a state means walking its objects, which costs what the state weighs; doing it at every commit would
make a batch cost the size of its customers. So a state is measured when it enters the cache for the first time and
again whenever ``version + GRACE`` has doubled since its last measure; in between, its size is that measure scaled
by the same ratio. The walk is thereby amortised to a constant per event (a customer with a handful of events is
measured once), and the estimate stays within a factor of two of the real size as long as a state grows at most in
proportion to its events, whatever the fold's data structures are.
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
        version, measured = self._measured.get(key, (-1, 0))
        if version < 0 or state.version + GRACE >= 2 * (version + GRACE):
            size = footprint(state)
            self._measured[key] = (state.version, size)
            return size
        return measured * (state.version + GRACE) // (version + GRACE)
