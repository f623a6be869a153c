"""Run one job: listen, launch the workers, drive them, report."""

from __future__ import annotations

import asyncio
import secrets
import ssl

from coordinator.core.job import Job
from coordinator.core.relay import Relay
from coordinator.core.server import FLOOD_HEADROOM, Coordinator, JobResult, ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import JobKeys, server_context
from coordinator.launch import Launcher, make_events


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(6)}"


async def run_job(
    job: Job,
    launcher: Launcher,
    keys: JobKeys,
    options: ServerOptions,
    status: Status | None = None,
    advertise: str | None = None,
    job_id: str | None = None,
    idle_timeout: float = 300,
) -> JobResult:
    """``advertise`` is the host workers dial; it defaults to the address we listen on."""
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
        port = await relay.start(options.host, port)
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
    try:
        port = await coordinator.start()
        address = f"{host}:{port}"
        events = make_events(job, job_id, address, keys, job.workers + options.spares, idle_timeout)
        spares = f" and {options.spares} spares" if options.spares else ""
        status.event(f"listening on {options.host}:{port}; launching {job.workers} workers{spares}")
        await launcher.launch(events)
        result = await coordinator.wait(launcher)
    finally:
        await coordinator.close()
        for task in list(extra_launches):
            task.cancel()
        await launcher.close()
        for relay in relays:
            await relay.close()
    return result
