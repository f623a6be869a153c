"""The roster's failure rules without sockets: retries, speculation, vacancies, the deadline."""

from __future__ import annotations

import pytest

from coordinator.core.roster import OK, Relaunch, Roster, StopOthers, rotating_goose


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_workers_fill_actors_in_order_and_spares_get_none():
    r = Roster(2)
    assert r.arrive() == (0, False)
    assert r.arrive() == (1, False)
    assert r.arrive() is None
    assert not r.may_need_workers  # no retries, no speculation: the port may close


def test_actor_numbers_follow_connection_order_as_in_mu():
    r = Roster(4, order=[2, 0, 3, 1])
    assert [r.arrive() for _ in range(4)] == [(2, False), (0, False), (3, False), (1, False)]


def test_a_replacement_takes_its_actors_place_in_the_order():
    r = Roster(3, retries=1, order=[1, 2, 0])
    assert r.arrive() == (1, False)
    assert r.ended(1, "FAIL(x)") == [Relaunch(1, "FAIL(x)")]
    assert r.arrive() == (1, False)  # rank 0 is vacant again and goes first
    assert r.arrive() == (2, False) and r.arrive() == (0, False)


def test_an_order_that_is_not_a_permutation_is_refused():
    with pytest.raises(ValueError, match=r"each of 0\.\.2 once"):
        Roster(3, order=[0, 0, 1])


# mu's own table (server.py _test_compute): kfDist, numParts -> actor numbers in connection order
@pytest.mark.parametrize(
    ("kf", "n", "actors"),
    [
        (3, 9, [0, 3, 6, 1, 4, 7, 2, 5, 8]),
        (4, 10, [0, 4, 8, 1, 5, 9, 2, 6, 3, 7]),
        (16, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (1, 3, [0, 1, 2]),
        (3, 7, [0, 3, 6, 1, 4, 2, 5]),
    ],
)
def test_rotating_goose_order_is_mus(kf, n, actors):
    assert [rotating_goose(k, kf, n)[0] for k in range(n)] == actors


def test_rotating_goose_is_a_permutation_and_names_groups():
    for kf in range(1, 9):
        for n in range(1, 40):
            seats = [rotating_goose(k, kf, n) for k in range(n)]
            assert sorted(a for a, _, _ in seats) == list(range(n))
            assert all(a == g * kf + p and p < kf for a, g, p in seats)


def test_a_failure_without_retries_is_final():
    r = Roster(2)
    r.arrive(), r.arrive()
    assert r.ended(0, "worker disconnected in S") == []
    assert r.ended(1, None) == []
    assert r.done and r.failures() == {0: "worker disconnected in S"} and r.succeeded == 1


def test_a_failed_actor_is_relaunched_and_refilled_until_retries_run_out():
    r = Roster(2, retries=2)
    r.arrive(), r.arrive()
    assert r.ended(1, "FAIL(x)") == [Relaunch(1, "FAIL(x)")]
    assert r.arrive() == (1, False)  # the replacement takes the same actor
    assert r.ended(1, "FAIL(y)") == [Relaunch(1, "FAIL(y)")]
    assert r.arrive() == (1, False)
    assert r.ended(1, "FAIL(z)") == []
    assert r.outcome[1] == "FAIL(z) (after 2 retries)" and r.relaunched == 2
    assert r.ended(0, None) == [] and r.done


def test_the_lowest_vacant_actor_is_filled_first():
    r = Roster(3, retries=1)
    for _ in range(3):
        r.arrive()
    r.ended(2, "lost")
    r.ended(0, "lost")
    assert [r.arrive(), r.arrive()] == [(0, False), (2, False)]


def test_vacancies_time_out_or_fail_once_no_worker_can_arrive():
    clock = Clock()
    r = Roster(2, retries=1, connect_timeout=10, clock=clock)
    assert r.arrive() == (0, False)
    clock.now = 9
    assert r.tick() == []
    clock.now = 10
    assert r.tick() == [Relaunch(1, "no worker connected within --connect-timeout 10 s")]
    # The replacement never comes either, and actor 1's one retry is spent: it fails for good.
    assert r.tick(fillable=0) == []
    assert r.outcome[1] == "its worker ended without connecting (after 1 retry)"


def test_seats_no_launched_worker_can_fill_fail_at_once_the_last_filled_first():
    """Launches are counted, not matched to seats: with 3 seats open and 1 worker still able to
    come, the 2 seats it would not reach fail now, each with a launcher's reason, in arrival
    order from the back; the one it would fill keeps waiting."""
    r = Roster(4, retries=1, order=[3, 2, 1, 0], connect_timeout=300)
    assert r.arrive() == (3, False)
    assert r.tick(fillable=3) == []
    lost = ["its invocation failed: HTTP 403", "its invocation failed: HTTP 404"]
    assert r.tick(fillable=1, lost=lost) == [Relaunch(0, lost[0]), Relaunch(1, lost[1])]
    assert r.open_seats == 3  # both reopened for their replacements
    assert r.tick(fillable=1) == []  # their replacements failed too, and the one retry is spent
    assert r.outcome == {0: "its worker ended without connecting (after 1 retry)",
                         1: "its worker ended without connecting (after 1 retry)"}  # fmt: skip
    assert r.open_seats == 1 and r.arrive() == (2, False)
    r = Roster(2, connect_timeout=300)
    assert r.tick(fillable=0, lost=["its invocation failed: HTTP 403"]) == []
    assert r.outcome == {0: "its worker ended without connecting", 1: "its invocation failed: HTTP 403"}
    assert r.done and r.unfilled == {0, 1}


def test_a_launch_shortfall_drops_a_wanted_duplicate_before_failing_a_vacancy():
    r = Roster(2, speculate=50, connect_timeout=300)
    r.arrive(), r.arrive()
    assert r.ended(0, None) == [Relaunch(1, "speculative duplicate of a straggler")]
    assert r.open_seats == 1
    assert r.tick(fillable=0, lost=["its invocation failed: HTTP 429"]) == []
    assert r.open_seats == 0 and 1 not in r.outcome  # actor 1's own worker is still at it
    assert r.ended(1, None) == [] and r.done and r.failures() == {}


def test_a_finished_actor_wants_no_duplicate_any_more():
    r = Roster(3, speculate=30)
    r.arrive(), r.arrive(), r.arrive()
    assert r.ended(0, None) == [Relaunch(1, "speculative duplicate of a straggler"),
                                Relaunch(2, "speculative duplicate of a straggler")]  # fmt: skip
    assert r.ended(1, None) == []
    assert r.open_seats == 1 and r.arrive() == (2, True)


def test_speculation_duplicates_stragglers_once_and_the_first_finisher_wins():
    r = Roster(4, speculate=50)
    for _ in range(4):
        r.arrive()
    assert r.ended(1, None) == []  # 1 of 4 done: below 50 %
    actions = r.ended(2, None)  # 2 of 4: actors 0 and 3 still running get duplicates
    assert actions == [Relaunch(0, "speculative duplicate of a straggler"),
                       Relaunch(3, "speculative duplicate of a straggler")]  # fmt: skip
    assert r.ended(3, None) == []  # 3 finished before its duplicate arrived
    assert r.arrive() == (0, True)  # the duplicate for 3 is skipped; 0's is taken
    assert r.arrive() is None
    assert r.ended(0, None) == [StopOthers(0)]  # the duplicate won; stop the original
    assert r.ended(0, "job ended") == []  # the original's end changes nothing
    assert r.done and r.succeeded == 4 and r.relaunched == 2


def test_a_failed_original_leaves_the_actor_to_its_duplicate():
    r = Roster(2, speculate=50)
    r.arrive(), r.arrive()
    r.ended(1, None)
    assert r.arrive() == (0, True)
    assert r.ended(0, "worker disconnected") == []  # the duplicate still plays actor 0
    assert r.ended(0, None) == [] and r.outcome[0] == OK


def test_the_deadline_fails_every_undecided_actor():
    r = Roster(3)
    r.arrive()
    r.ended(0, None)
    r.give_up(lambda actor: f"deadline passed for {actor}")
    assert r.done and r.failures() == {1: "deadline passed for 1", 2: "deadline passed for 2"}
    assert r.arrive() is None
