"""Job threads that found only jobs they cannot run: a wake is never lost between the take and the wait."""

from __future__ import annotations

import threading

from comfyjobs.worker.parking import Parking


def test_a_wake_between_the_take_and_the_wait_is_not_lost() -> None:
    parking = Parking()
    looked = parking.generation()  # before the take that found nothing to run
    parking.wake()  # e.g. a job it can run arrived meanwhile
    parking.wait(since=looked, timeout_s=60)  # returns at once: that arrival is looked at
    assert parking.parked == 0


def test_a_parked_thread_wakes_when_woken() -> None:
    parking = Parking()
    looked = parking.generation()
    done = threading.Event()

    def park() -> None:
        parking.wait(since=looked, timeout_s=600)
        done.set()

    thread = threading.Thread(target=park)
    thread.start()
    assert parking.wait_for_parked(60)  # (it is waiting now)
    assert not done.is_set()
    parking.wake()
    thread.join(60)
    assert done.is_set() and parking.parked == 0
