"""The committed-states cache: bounded by the bytes its states hold, whatever their count."""

from __future__ import annotations

import pytest

from shared.ledger import cache as cache_module
from shared.ledger.cache import StateCache, footprint
from shared.ledger.state import CustomerState
from tests.factories import TENANT, fold, invoice


def customer(name: str, invoices: int) -> CustomerState:
    state = fold([invoice(f"{name}-{n}", "10.00") for n in range(invoices)], customer_id=name)
    state.version = invoices
    return state


def test_the_footprint_of_a_state_grows_with_what_it_holds() -> None:
    small, large = customer("S", 2), customer("L", 200)
    assert 0 < footprint(small) < footprint(large)
    assert footprint(large) > 5 * footprint(small)  # a count would take them for the same


def test_states_are_evicted_by_bytes_oldest_first_not_by_count() -> None:
    # Given a cache with room for about three large customers
    large = footprint(customer("X", 200))
    cache = StateCache(max_bytes=3 * large + large // 2)
    # When five large customers are committed one after the other
    for name in "ABCDE":
        cache.remember(customer(name, 200))
    # Then only the three most recent remain, and the cache holds no more than its bound
    assert [key[1] for key in cache] == ["C", "D", "E"]
    assert cache.bytes <= cache.max_bytes


def test_many_small_states_fit_where_few_large_ones_do() -> None:
    large = footprint(customer("X", 200))
    cache = StateCache(max_bytes=3 * large)
    for n in range(30):
        cache.remember(customer(f"s{n}", 2))
    assert len(cache) == 30  # thirty small customers weigh less than three large ones


def test_a_state_handed_out_no_longer_counts_and_counts_again_when_it_comes_back() -> None:
    cache = StateCache(max_bytes=10**9)
    state = customer("A", 20)
    cache.remember(state)
    held = cache.bytes
    assert held > 0
    assert cache.pop((TENANT, "A"), None) is state
    assert cache.bytes == 0
    cache.remember(state)
    assert cache.bytes == held


def test_after_the_first_states_most_new_ones_are_estimated_from_the_measured_bytes_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = StateCache(max_bytes=10**9)
    states = [customer(f"c{n}", 20) for n in range(cache_module.EXACT_FIRST + 4 * cache_module.SAMPLE_EVERY)]
    walked: list[object] = []

    def counting(root: object) -> int:
        walked.append(root)
        return footprint(root)

    monkeypatch.setattr(cache_module, "footprint", counting)
    for state in states:
        cache.remember(state)
    assert len(walked) == cache_module.EXACT_FIRST + 4  # the first ones, then one in SAMPLE_EVERY
    exact = sum(footprint(state) for state in states)
    assert 0.8 * exact <= cache.bytes <= 1.25 * exact  # same-shaped customers: the estimate is close to the walk
