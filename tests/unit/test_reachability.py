"""A worker judges others' heartbeats only after reaching the database without a break."""

from interpreter.queues.procrastinate.worker import Reachability


def test_not_steady_until_a_whole_window_of_contact() -> None:
    seen = Reachability(window_s=10, max_gap_s=3)
    assert not seen.steady(0)
    for now in range(0, 10, 2):
        seen.reached(now)
        assert not seen.steady(now)
    seen.reached(10)
    assert seen.steady(10)


def test_an_outage_starts_the_window_again() -> None:
    seen = Reachability(window_s=10, max_gap_s=3)
    for now in range(0, 12, 2):
        seen.reached(now)
    assert seen.steady(11)
    seen.failed()  # the database stopped answering
    for now in range(40, 50, 2):
        seen.reached(now)
        assert not seen.steady(now)
    seen.reached(50)
    assert seen.steady(50)


def test_a_pause_of_our_own_starts_the_window_again() -> None:
    seen = Reachability(window_s=10, max_gap_s=3)
    for now in range(0, 12, 2):
        seen.reached(now)
    seen.reached(30)  # resumed after a long stop: heartbeats look old to us only
    assert not seen.steady(30)
