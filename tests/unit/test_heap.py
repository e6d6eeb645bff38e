"""`spanstream.heap`: what the shells do to the garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from spanstream import heap


@pytest.fixture(autouse=True)
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_takes_the_start_up_heap_out_of_collections() -> None:
    built_at_start = [Node() for _ in range(3)]

    frozen = heap.settle("test start-up")

    assert frozen == gc.get_freeze_count() > 0
    visible = {id(o) for o in gc.get_objects()}
    assert not visible & {id(o) for o in built_at_start}
    assert id(built_at_start) not in visible


def test_settle_raises_only_the_young_threshold() -> None:
    _, middle, old = gc.get_threshold()

    heap.settle("test start-up")

    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, middle, old)


def test_a_cycle_made_after_settle_is_still_freed() -> None:
    heap.settle("test start-up")
    first, second = Node(), Node()
    first.other, second.other = second, first
    freed = []
    weakref.finalize(first, freed.append, "first")
    del first, second

    gc.collect()

    assert freed == ["first"]


def test_tuned_thresholds_are_restored_after_the_block() -> None:
    before = gc.get_threshold()

    with heap.tuned_thresholds():
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD

    assert gc.get_threshold() == before
