"""What the server needs to know about a job, independent of which job it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.core.machine import MachineState


def numbered_key(prefix: str, n: int, suffix: str) -> str:
    """Jobs name objects by number, zero-padded to 8 digits as mu did: keys sort in order, and a
    re-run writes the same key again instead of adding a second object."""
    return f"{prefix}{n:08d}{suffix}"


@dataclass
class Job:
    """A job: the first state of every worker's machine and the settings its states read.

    ``info`` is copied into each worker's first state, so states find job settings (bucket,
    frames per chunk, ...) in ``self.info`` next to what they learn at run time (mu jobs keep
    their settings in a class instead and start with an empty ``info``).

    ``initial`` is called as mu's server called it: ``initial(link, actor)``, or
    ``initial(link, actor, group)`` for actors listed in ``groups``.
    """

    name: str
    initial: Callable[..., MachineState]
    workers: int
    info: dict[str, Any] = field(default_factory=dict)
    command: str = ""  # the worker's default command for ``run:``
    bucket: str = ""
    region: str = "us-east-1"
    s3_endpoint: str | None = None
    nonblock: int = 0
    relay: bool = False  # run a relay beside the coordinator; states find it as info["relay"]
    actor_label: Callable[[int], str] | None = None  # names an actor's share of work in reports
    order: list[int] | None = None  # actor played by each worker in connection order (mu's -K)
    groups: dict[int, int] | None = None  # actor -> group number passed to ``initial`` (mu's -R jobs)
    event: dict[str, Any] = field(default_factory=dict)  # more invocation-event fields (mu's event)
    relay_ports: tuple[int, ...] = ()  # fixed ports of relays started for the job (mu's -T/-R)
    kill_state: Any = None  # the ErrorState class a worker over the kill time ends in (mu's kill_state)
    # Drives each connected worker instead of a walk over the states (mu.map's calls): an object
    # with ``async drive(record, reader, writer, decoder, first)`` that ends ``record.machine``.
    driver: Any = None
