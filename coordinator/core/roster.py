"""Which worker plays which actor: vacancies, retries, speculative duplicates, outcomes.

Sans-I/O like the machines: the server reports what happened (a worker arrived, a worker
ended, time passed) and carries out what comes back (launch one more worker, stop the
duplicates of an actor that has finished). Keeping it apart makes every failure rule a
plain unit test.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import takewhile

OK = "ok"
UNFILLABLE = "its worker ended without connecting"  # a launch that came to nothing, reason unknown


@dataclass(frozen=True)
class Relaunch:
    actor: int
    why: str


@dataclass(frozen=True)
class StopOthers:
    actor: int


Action = Relaunch | StopOthers


def rotating_goose(arrival: int, kf_dist: int, workers: int) -> tuple[int, int, int]:
    """mu's ``_compute_actor_number``: with a keyframe every ``kf_dist`` chunks, which chunk the
    ``arrival``-th worker to connect encodes: ``(actor, group, place)``.

    The chunks fall into groups of ``kf_dist`` (the last may be shorter); arrivals go round
    the groups, so every group starts early and the chain inside a group fills from its front.
    """
    short = workers % kf_dist
    groups = workers // kf_dist + (1 if short else 0)
    if short == 0 or arrival < groups * short:
        group, place = arrival % groups, arrival // groups
    else:  # the short last group is full: go round the others
        later = arrival - short * groups
        group, place = later % (groups - 1), short + later // (groups - 1)
    return group * kf_dist + place, group, place


@dataclass
class Roster:
    """``order[k]`` is the actor the k-th worker to connect plays (mu: connection order, or
    the rotating goose with ``-K``); a replacement takes its actor's place in that order."""

    workers: int
    retries: int = 0
    speculate: float = 0.0  # percent of actors done before the rest get duplicates; 0 is off
    connect_timeout: float = 300.0
    clock: Callable[[], float] = time.monotonic
    order: list[int] | None = None
    vacant: list[tuple[int, int]] = field(default_factory=list)  # heap of (arrival rank, actor)
    vacant_since: dict[int, float] = field(default_factory=dict)
    duplicates_wanted: deque[int] = field(default_factory=deque)
    outcome: dict[int, str] = field(default_factory=dict)  # actor -> OK or the error
    retries_used: dict[int, int] = field(default_factory=dict)
    live: dict[int, int] = field(default_factory=dict)  # actor -> workers playing it now
    speculated: set[int] = field(default_factory=set)
    unfilled: set[int] = field(default_factory=set)  # actors whose last attempt never connected
    relaunched: int = 0

    def __post_init__(self) -> None:
        order = list(range(self.workers)) if self.order is None else list(self.order)
        if sorted(order) != list(range(self.workers)):
            raise ValueError(f"actor order must hold each of 0..{self.workers - 1} once, got {order}")
        self._rank = {actor: rank for rank, actor in enumerate(order)}
        now = self.clock()
        for actor in order:
            self._vacate(actor, now)

    # -- queries ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return len(self.outcome) == self.workers

    @property
    def succeeded(self) -> int:
        return sum(1 for v in self.outcome.values() if v == OK)

    def failures(self) -> dict[int, str]:
        return {a: why for a, why in sorted(self.outcome.items()) if why != OK}

    @property
    def open_seats(self) -> int:
        return len(self.vacant) + len(self.duplicates_wanted)

    @property
    def may_need_workers(self) -> bool:
        """False once no retry or duplicate can ever be asked for: the port may close."""
        return bool(self.open_seats or self.retries or self.speculate)

    # -- events -------------------------------------------------------------------------------

    def arrive(self) -> tuple[int, bool] | None:
        """A worker said OK:HELLO: its actor and whether it is a duplicate, or None (a spare)."""
        if self.vacant:
            _, actor = heapq.heappop(self.vacant)
            self.vacant_since.pop(actor, None)
            self.unfilled.discard(actor)

            self.live[actor] = self.live.get(actor, 0) + 1
            return actor, False
        while self.duplicates_wanted:
            actor = self.duplicates_wanted.popleft()
            if actor not in self.outcome:
                self.live[actor] = self.live.get(actor, 0) + 1
                return actor, True
        return None

    def ended(self, actor: int, error: str | None) -> list[Action]:
        """A worker playing ``actor`` ended, well (``error`` None) or not."""
        self.live[actor] = max(0, self.live.get(actor, 0) - 1)
        if actor in self.outcome:
            return []  # a duplicate of a decided actor; nothing to do
        if error is None:
            self.outcome[actor] = OK
            if actor in self.duplicates_wanted:  # its duplicate is not needed any more
                self.duplicates_wanted.remove(actor)
            actions: list[Action] = [StopOthers(actor)] if self.live[actor] else []
            return actions + self._maybe_speculate()
        if self.live[actor]:
            return []  # a duplicate still plays this actor; let it finish
        return self._failed(actor, error)

    def tick(self, fillable: int | None = None, lost: Sequence[str] = ()) -> list[Action]:
        """Time passed: vacancies nobody will fill count as failed attempts.

        A vacancy waiting longer than ``connect_timeout`` has failed. ``fillable`` is how many
        open seats the launched workers can still fill (None: unknown, so only the timeout
        applies): seats beyond it can never be filled, so they fail now, those a new worker
        would fill last first. A wanted duplicate goes before any vacancy (its actor still has
        a worker); each vacancy fails with the next of ``lost``, why a launch came to nothing.
        """
        cutoff = self.clock() - self.connect_timeout
        # vacant_since is in the order vacancies opened, so the expired ones come first.
        expired = list(takewhile(lambda actor: self.vacant_since[actor] <= cutoff, self.vacant_since))
        why = f"no worker connected within --connect-timeout {self.connect_timeout:g} s"
        reasons = dict.fromkeys(expired, why)
        excess = 0 if fillable is None else self.open_seats - len(expired) - max(0, fillable)
        while excess > 0 and self.duplicates_wanted:
            self.duplicates_wanted.pop()
            excess -= 1
        if excess > 0:
            last_filled = heapq.nlargest(excess, (seat for seat in self.vacant if seat[1] not in reasons))
            lost = list(lost)
            for k, (_, actor) in enumerate(last_filled):
                reasons[actor] = lost[k] if k < len(lost) else UNFILLABLE
        if not reasons:
            return []
        self.vacant = [seat for seat in self.vacant if seat[1] not in reasons]
        heapq.heapify(self.vacant)
        actions: list[Action] = []
        for actor in sorted(reasons):
            del self.vacant_since[actor]
            self.unfilled.add(actor)
            actions += self._failed(actor, reasons[actor])
        return actions

    def restart_clocks(self) -> None:
        """Vacancies start waiting now (the port has just opened)."""
        now = self.clock()
        self.vacant_since = dict.fromkeys(self.vacant_since, now)

    def stand_down(self) -> None:
        """The job needs no more workers (mu.map's executor is done): seats still waiting for a
        worker close without counting as failed, and no duplicate is wanted any more."""
        for actor in self.vacant_since:
            self.outcome.setdefault(actor, OK)
        self.vacant.clear()
        self.vacant_since.clear()
        self.duplicates_wanted.clear()

    def give_up(self, why: Callable[[int], str]) -> None:
        """The job's --deadline passed: every undecided actor fails with ``why(actor)``."""
        for actor in range(self.workers):
            if actor not in self.outcome:
                self.outcome[actor] = why(actor)
        self.vacant.clear()
        self.vacant_since.clear()
        self.duplicates_wanted.clear()

    # -- internals ----------------------------------------------------------------------------

    def _vacate(self, actor: int, now: float) -> None:
        heapq.heappush(self.vacant, (self._rank[actor], actor))
        self.vacant_since[actor] = now

    def _failed(self, actor: int, error: str) -> list[Action]:
        used = self.retries_used.get(actor, 0)
        if used >= self.retries:
            suffix = f" (after {used} {'retry' if used == 1 else 'retries'})" if used else ""
            self.outcome[actor] = error + suffix
            return []
        self.retries_used[actor] = used + 1
        self._vacate(actor, self.clock())
        self.relaunched += 1
        return [Relaunch(actor, error)]

    def _maybe_speculate(self) -> list[Action]:
        if not self.speculate:
            return []
        if self.succeeded < math.ceil(self.workers * self.speculate / 100.0):
            return []
        actions: list[Action] = []
        for actor in range(self.workers):
            if actor not in self.outcome and actor not in self.speculated and self.live.get(actor):
                self.speculated.add(actor)
                self.duplicates_wanted.append(actor)
                self.relaunched += 1

                actions.append(Relaunch(actor, "speculative duplicate of a straggler"))
        return actions
