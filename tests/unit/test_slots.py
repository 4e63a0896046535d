"""The llama.cpp engine's slot numbers: the lowest free first."""

from __future__ import annotations

from serving.engines.slots import LowestFree


def test_numbers_come_lowest_first_and_a_freed_one_is_the_next_taken() -> None:
    numbers = LowestFree(4)
    assert [numbers.take() for _ in range(3)] == [0, 1, 2]
    numbers.give(1)
    numbers.give(0)
    assert numbers.take() == 0 and numbers.take() == 1 and numbers.take() == 3


def test_none_when_every_number_is_taken_and_giving_none_changes_nothing() -> None:
    numbers = LowestFree(1)
    assert numbers.take() == 0
    assert numbers.take() is None
    numbers.give(None)
    assert numbers.take() is None
    numbers.give(0)
    assert numbers.take() == 0
