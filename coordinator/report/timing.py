"""The timing log (``-O FILE``): one JSON document per job, and what the server counts for it.

Schema (``"schema": 2``); times are seconds since the coordinator started listening::

    job, job_id, backend, started (UTC, ISO 8601), elapsed, ok, workers, spares,
    relaunched, rejected_connections, log_dir, worker_logs,
    launches: [{worker, sent, accepted, exited}]        # per invocation, from the launcher
    records: [{actor, worker, meta, label, peer, duplicate, connected, ended, ok, superseded,
               error,
               launch: {worker, sent, accepted},     # its own invocation (below), or null
               states: [{state, name, t}]}]          # str(state), its human name, entry time
    failures: {"actor N (label)": reason}
    commands_not_run: [{status, program, actors}]  # run: replies with exit status 127 or 126
    outputs: {count, locations: [{bucket, prefix, count}]}
    s3_requests: {get, put, list}
    cost_inputs: {...}  (coordinator.report.cost.CostInputs)
    cost: {total_usd, lines, prices_date, prices_region}   # aws backend only

A record's ``worker`` and ``meta`` are what the worker said about itself right after
``OK:HELLO`` (``lambda_worker.wire.META``: its invocation's number, its Python, on Lambda its
time limit); ``launch`` is the invocation of that number, so each connection is paired with
exactly the invocation that made it. A record whose worker said nothing (a worker from before
this message) has no ``launch``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from coordinator.core.logsink import in_ecs_task
from coordinator.report.cost import CostInputs, estimate, lambda_billed_seconds
from coordinator.report.names import name_from_label
from lambda_worker.commands import program_not_run

SCHEMA = 2


NOT_RUN = (b"OK:RETVAL(127):", b"OK:RETVAL(126):")  # the shell found no program, or could not run it


class ServerBooks:
    """What the server counts for the log as bytes go by: S3 requests sent, objects written,
    and the ``run:`` commands whose program the shell could not find or execute, by actor,
    whether or not the job's state accepted that reply (mu's states often accept any)."""

    def __init__(self) -> None:
        self.s3 = Counter({"get": 0, "put": 0})
        self.written: set[tuple[str, str]] = set()
        self.not_run: dict[tuple[int, str], set[int]] = {}  # (status, program) -> actors

    def commands(self, commands: Iterable[bytes]) -> None:
        for command in commands:
            if command.startswith(b"retrieve:"):
                self.s3["get"] += 1
            elif command.startswith(b"upload:"):
                self.s3["put"] += 1

    def replies(self, messages: Iterable[bytes], actor: int | None = None) -> None:
        """``OK:UPLOAD(bucket/key)`` names an object the job wrote; ``actor`` is whose replies
        these are."""
        for msg in messages:
            if msg.startswith(b"OK:UPLOAD(") and msg.endswith(b")"):
                bucket, _, key = msg[len(b"OK:UPLOAD(") : -1].decode("utf-8", "replace").partition("/")
                if bucket and key:
                    self.written.add((bucket, key))
            elif actor is not None and msg.startswith(NOT_RUN):
                status = int(msg[10:13])
                self.not_run.setdefault((status, _program(status, msg)), set()).add(actor)

    def commands_not_run(self) -> list[dict[str, Any]]:
        return [
            {"status": status, "program": program, "actors": sorted(actors)}
            for (status, program), actors in sorted(self.not_run.items())
        ]


def _program(status: int, reply: bytes) -> str:
    """The program of a ``OK:RETVAL(n):OUTPUT(...):COMMAND(cmd)`` reply the shell could not
    run, as its output names it; else the command itself."""
    output, _, command = reply[len(b"OK:RETVAL(127):OUTPUT(") :].rpartition(b"):COMMAND(")
    named = program_not_run(status, output)
    if named:
        return named
    text = command.removesuffix(b")").decode("utf-8", "replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def output_locations(written: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Objects written, counted per bucket and folder (the key up to its last ``/``)."""
    counts = Counter((bucket, key.rpartition("/")[0] + "/" if "/" in key else "") for bucket, key in written)
    return [{"bucket": b, "prefix": p, "count": n} for (b, p), n in sorted(counts.items())]


def _rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 6)


def state_entries(history: Iterable[Any], t0: float) -> list[dict[str, Any]]:
    """A machine's history as ``{state, name, t}``; tolerant of the entry shapes machines keep."""
    out = []
    for entry in history:
        label, t = entry[0], entry[-1]
        label = label if isinstance(label, str) else str(label)
        out.append({"state": label, "name": name_from_label(label), "t": round(t - t0, 6)})
    return out


def pair_launches(
    records: list[dict[str, Any]], launches: dict[int, dict[str, float]], t0: float
) -> list[dict[str, Any]]:
    """Launch entries (relative times); each record gets the invocation its worker named."""
    entries = [
        {"worker": w, **{k: _rel(v, t0) for k, v in sorted(marks.items())}}
        for w, marks in sorted(launches.items())
    ]
    by_worker = {e["worker"]: e for e in entries}
    for record in records:
        launch = by_worker.get(record.get("worker"))
        keep = ("worker", "sent", "accepted")
        record["launch"] = None if launch is None else {k: launch.get(k) for k in keep}
    return entries


def worker_billed_seconds(record: dict[str, Any], elapsed: float) -> float:
    """What Lambda bills for a connection's invocation: from when Lambda accepted it (the worker
    starts after that; its start-up and its dial back are billed too) to the connection's end,
    or the job's end if it never ended, rounded up to the millisecond. A connection without its
    invocation (a worker that did not name it) counts from when it connected."""
    launch = record.get("launch") or {}
    start = next((launch[k] for k in ("accepted", "sent") if launch.get(k) is not None), record["connected"])
    end = record["ended"] if record["ended"] is not None else elapsed
    return lambda_billed_seconds(start, end)


def document(
    *,
    job: str,
    workers: int,
    t0: float,
    records: list[dict[str, Any]],
    launches: dict[int, dict[str, float]],
    books: ServerBooks,
    failures: dict[str, str],
    ok: bool,
    relaunched: int,
    rejected: int,
    meta: dict[str, Any],
    prices: dict[str, float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The whole timing log; ``meta`` is what the caller knows (backend, job id, sizes, ...)."""
    now = clock()
    elapsed = now - t0
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=elapsed)
    launch_entries = pair_launches(records, launches, t0)
    lambda_seconds = sum(worker_billed_seconds(r, elapsed) for r in records)
    on_fargate = meta.get("coordinator_on_fargate")
    s3 = {"get": books.s3["get"], "put": books.s3["put"], "list": int(meta.get("s3_list", 0))}
    inputs = CostInputs(
        invocations=sum(1 for e in launch_entries if e.get("accepted") is not None),
        lambda_seconds=round(lambda_seconds, 3),
        lambda_memory_mb=int(meta.get("lambda_memory_mb") or CostInputs.lambda_memory_mb),
        lambda_arch=str(meta.get("lambda_arch") or CostInputs.lambda_arch),
        coordinator_seconds=round(elapsed + float(meta.get("before_listening", 0.0)), 3),
        coordinator_on_fargate=in_ecs_task() if on_fargate is None else bool(on_fargate),
        coordinator_vcpu=float(meta.get("coordinator_vcpu") or CostInputs.coordinator_vcpu),
        coordinator_gb=float(meta.get("coordinator_gb") or CostInputs.coordinator_gb),
        s3_get=s3["get"],
        s3_put=s3["put"],
        s3_list=s3["list"],
    )
    written = sorted(books.written)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "job": job,
        "job_id": meta.get("job_id"),
        "backend": meta.get("backend", "local"),
        "started": started.isoformat(timespec="milliseconds"),
        "elapsed": round(elapsed, 6),
        "ok": ok,
        "workers": workers,
        "spares": meta.get("spares", 0),
        "relaunched": relaunched,
        "rejected_connections": rejected,
        "log_dir": meta.get("log_dir"),
        "worker_logs": meta.get("worker_logs"),
        "launches": launch_entries,
        "records": records,
        "failures": failures,
        "commands_not_run": books.commands_not_run(),
        "outputs": {"count": len(written), "locations": output_locations(written)},
        "s3_requests": s3,
        "cost_inputs": vars(inputs),
    }
    if doc["backend"] == "aws":
        doc["cost"] = estimate(inputs, prices).as_dict()
    return doc
