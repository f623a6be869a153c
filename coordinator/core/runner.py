"""Run one job: listen, launch the workers, drive them, report; stop cleanly when interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import ssl
from collections.abc import Iterator
from types import FrameType
from typing import Any

from coordinator.core.job import Job
from coordinator.core.relay import Relay
from coordinator.core.server import FLOOD_HEADROOM, Coordinator, JobResult, ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import JobKeys, server_context
from coordinator.launch import Launcher, make_events

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(6)}"


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside a running job: unwinds like KeyboardInterrupt, so every
    ``finally`` and ``with`` cleans up (the demo's S3 server, temp folders)."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"interrupted by {sig.name}")
        self.signal = sig


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` for the duration; a running job replaces
    this with an orderly stop (``run_job(..., handle_signals=True)``)."""

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum))

    previous = {sig: signal.signal(sig, raise_interrupted) for sig in INTERRUPTS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_stop(coordinator: Coordinator) -> Iterator[None]:
    """While the job runs, SIGINT and SIGTERM stop it in order instead of unwinding it."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in INTERRUPTS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, coordinator.interrupt, sig)
        except (RuntimeError, ValueError, NotImplementedError):
            continue  # not the main thread: whoever runs us handles signals
        installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


async def _launch(launcher: Launcher, events: list[dict[str, Any]], coordinator: Coordinator) -> None:
    """Launch, unless an interrupt comes first (a throttled Lambda launch can take minutes)."""
    launching = asyncio.ensure_future(launcher.launch(events))
    while not launching.done() and coordinator.interrupted is None:
        await asyncio.wait({launching}, timeout=0.1)
    if launching.done():
        launching.result()
    else:
        launching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await launching


async def run_job(
    job: Job,
    launcher: Launcher,
    keys: JobKeys,
    options: ServerOptions,
    status: Status | None = None,
    advertise: str | None = None,
    job_id: str | None = None,
    idle_timeout: float = 300,
    handle_signals: bool = False,
) -> JobResult:
    """``advertise`` is the host workers dial; it defaults to the address we listen on.

    With ``handle_signals``, SIGINT and SIGTERM end the job early but in order: the result
    says which signal (``JobResult.interrupted``). A job that ends early (that, or its
    ``--deadline``, or an error) has its local workers killed at once; one that finishes
    gives workers told ``quit:`` a moment to exit on their own.
    """
    status = status or Status(job.name, job.workers)
    host = advertise or options.host
    if host in ("0.0.0.0", "::", ""):
        raise ValueError(
            "listening on every interface: say which address workers should dial with --advertise"
        )
    job_id = job_id or new_job_id(job.name)
    ctx: ssl.SSLContext = server_context(keys)
    relays: list[Relay] = []

    async def start_relay(port: int) -> int:
        relay = Relay(
            ctx,
            log=status.event,
            hello_timeout=options.hello_timeout,
            max_pending=max(4096, job.workers + options.spares + FLOOD_HEADROOM),
        )
        relays.append(relay)
        try:
            port = await relay.start(options.host, port)
        except OSError as exc:
            raise OSError(f"{exc}; pick another port with {options.relay_port_flag}") from exc
        status.event(f"relay listening on {options.host}:{port}")
        return port

    try:
        if job.relay:
            relay_port = await start_relay(options.relay_port)
            job.info.update(relay=f"{host}:{relay_port}", chain=job_id)
        for port in job.relay_ports:  # a mu job's state servers (-T, -R), at the ports it dials
            await start_relay(port)
    except BaseException:
        for relay in relays:
            await relay.close()
        raise
    address = ""  # the host:port workers dial, known once the port is open
    extra_launches: set[asyncio.Task[None]] = set()
    next_worker = job.workers + options.spares

    def relaunch(actor: int) -> None:
        """One more worker (a replacement or a duplicate); it takes the actor when it connects."""
        nonlocal next_worker
        event = make_events(job, job_id, address, keys, 1, idle_timeout, first=next_worker)[0]
        next_worker += 1
        task = asyncio.get_running_loop().create_task(launcher.launch([event]))
        extra_launches.add(task)
        task.add_done_callback(extra_launches.discard)

    coordinator = Coordinator(job, ctx, options, status, relaunch)
    early = True
    with _signals_stop(coordinator) if handle_signals else contextlib.nullcontext():
        try:
            port = await coordinator.start()
            address = f"{host}:{port}"
            events = make_events(job, job_id, address, keys, job.workers + options.spares, idle_timeout)
            spares = f" and {options.spares} spares" if options.spares else ""
            status.event(f"listening on {options.host}:{port}; launching {job.workers} workers{spares}")
            await _launch(launcher, events, coordinator)
            result = await coordinator.wait(launcher)
            early = coordinator.ended_early
        finally:
            await coordinator.close()
            for task in list(extra_launches):
                task.cancel()
            await (launcher.abort() if early else launcher.close())
            for relay in relays:
                await relay.close()
    return result
