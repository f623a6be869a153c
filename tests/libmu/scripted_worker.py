"""A worker that answers the way mu's worker does, without running anything: for replays.

Replies follow mu's lambda_function_template and handler: ``OK:SET(k)``, ``OK:RETRIEVE(b/k)``,
``OK:RETVAL(n):OUTPUT():COMMAND(cmd)`` ...; with ``nonblock`` the slow commands (retrieve,
upload, run) first say ``OK:RETRIEVING/UPLOADING/RUNNING`` unless ``bg_silent``, and their final
reply comes later, in the order they were started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordinator.core.machine import Machine


class ScriptedWorker:
    def __init__(self, event: dict[str, Any], retval: Callable[[str], int] = lambda cmd: 0) -> None:
        self.vals: dict[str, Any] = {
            "bucket": event.get("bucket"),
            "nonblock": int(event.get("nonblock", 0)),
            "bg_silent": int(event.get("bg_silent", 0)),
        }
        self.retval = retval
        self.outbox = ["OK:HELLO"]
        self.running: list[str] = []  # final replies of background commands, oldest first
        self.quit = False

    def _slow(self, started: str, done: str) -> None:
        if self.vals["nonblock"]:
            if not self.vals["bg_silent"]:
                self.outbox.append(started)
            self.running.append(done)
        else:
            self.outbox.append(done)

    def handle(self, command: str) -> None:
        name, _, arg = command.partition(":")
        if name in ("set", "seti"):
            key, _, value = arg.partition(":")
            self.vals[key] = int(value) if name == "seti" else value
            self.outbox.append(f"OK:{name.upper()}({key})")
        elif name in ("retrieve", "upload"):
            key, _, path = arg.partition("\0")
            bucket = self.vals["bucket"]
            if name == "retrieve":
                self._slow(f"OK:RETRIEVING({bucket}/{key}->{path})", f"OK:RETRIEVE({bucket}/{key})")
            else:
                self._slow(f"OK:UPLOADING({path}->{bucket}/{key})", f"OK:UPLOAD({bucket}/{key})")
        elif name == "run":
            self._slow(f"OK:RUNNING({arg})", f"OK:RETVAL({self.retval(arg)}):OUTPUT():COMMAND({arg})")
        elif name == "connect":
            self.outbox.append(f"OK:CONNECT({arg})")
        elif name == "quit":
            self.quit = True
        else:
            self.outbox.append(f"FAIL(no such command '{command}')")

    def next_reply(self) -> str | None:
        if not self.outbox and self.running:
            self.outbox.append(self.running.pop(0))
        return self.outbox.pop(0) if self.outbox else None


def replay(machine: Machine, worker: ScriptedWorker, limit: int = 10_000) -> list[str]:
    """Drive ``machine`` with ``worker``'s replies, one a read, until either stops; returns
    every command the machine sent, in order."""
    sent: list[str] = []
    commands = machine.drain()
    for _ in range(limit):
        for command in commands:
            sent.append(command.decode())
            if not worker.quit:
                worker.handle(command.decode())
        if worker.quit or machine.done:
            break
        reply = worker.next_reply()
        if reply is None:
            break
        commands = machine.receive(reply.encode())
    return sent
