"""Ring-timer slots (calls.timers): one sweep per slot and process, never one per call."""

from __future__ import annotations

import pytest

from calls.timers import SlotTimers, slot_ms


@pytest.mark.parametrize("deadline, slot, end", [
    pytest.param(10_000, 250, 10_000, id="on-a-slot-end"),
    pytest.param(10_001, 250, 10_250, id="just-after-one"),
    pytest.param(10_249, 250, 10_250, id="just-before-the-next"),
    pytest.param(10_001, 1, 10_001, id="one-ms-slots-are-exact"),
])
def test_a_deadline_belongs_to_the_slot_ending_at_or_after_it(deadline, slot, end):
    assert slot_ms(deadline, slot) == end


@pytest.fixture
def slots(settings):
    settings.DUET_RING_TIMER_SLOT_MS = 250
    return SlotTimers()


def test_one_sweep_per_slot(slots):
    # given a process whose dials arm timers
    scheduled = []
    # when deadlines fall twice in one slot, then in the next
    results = [slots.arm(deadline, now_ms=0, schedule=scheduled.append)
               for deadline in (5_010, 5_250, 5_251, 5_400)]
    # then one sweep is scheduled per slot, at its end
    assert results == [True, False, True, False]
    assert scheduled == [5_250, 5_500]


def test_a_slot_whose_publish_failed_is_scheduled_by_the_next_dial(slots):
    # given a broker that refuses the first publish
    scheduled = []

    def refuse_once(at):
        if not scheduled:
            scheduled.append(None)
            raise ConnectionError("broker down")
        scheduled.append(at)
    # when two deadlines in one slot are armed
    with pytest.raises(ConnectionError):
        slots.arm(5_010, now_ms=0, schedule=refuse_once)
    slots.arm(5_020, now_ms=0, schedule=refuse_once)
    # then the second one schedules the slot's sweep
    assert scheduled == [None, 5_250]


def test_passed_slots_are_forgotten_and_coming_ones_kept(slots):
    # given 70 slots scheduled, one every 250 ms from 250 ms on
    scheduled = []
    for index in range(1, 71):
        slots.arm(index * 250, now_ms=0, schedule=scheduled.append)
    # when the clock has reached 10 s and two more deadlines are armed
    slots.arm(17_500, now_ms=10_000, schedule=scheduled.append)  # was scheduled: kept
    slots.arm(30_000, now_ms=10_000, schedule=scheduled.append)  # a new slot
    # then only the new slot was scheduled again, and the passed slots were dropped
    assert scheduled[70:] == [30_000]
    assert min(slots._scheduled) > 10_000
