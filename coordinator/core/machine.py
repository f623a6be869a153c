"""mu's state-machine classes, sans-I/O.

A job is a graph of state classes; each worker gets one :class:`Machine` that walks it. The
machine consumes the worker's replies and returns the commands to send; it never touches a
socket, so every job can be tested by feeding it strings. Class and attribute names are mu's
(``commandlist``, ``nextState``, ``iterKey`` ...) so mu job files port with import changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

MAX_REQUEUED = 64

# The reply a command's success starts with, used when a commandlist entry gives only the
# command. Prefixes cover both nonblock forms (OK:RUNNING / OK:RETVAL(0), OK:RETRIEVING / ...).
_REPLY_PREFIX = {
    "set": "OK:SET(",
    "seti": "OK:SETI(",
    "get": "OK:GET(",
    "geti": "OK:GETI(",
    "dump_vals": "OK:DUMP_VALS",
    "retrieve": "OK:RETRIEV",
    "upload": "OK:UPLOAD",
    "echo": "OK:ECHO(",
    "run": "OK:R",
    "connect": "OK:CONNECT",
    "close_connect": "OK:CLOSE_CONNECT",
    "send": "OK:SEND(",
}


def expected_reply(command: str | bytes | None) -> str:
    """The reply prefix that acknowledges ``command`` (``OK`` when nothing better is known)."""
    if command is None:
        return "OK"
    text = command.decode("ascii", "replace") if isinstance(command, bytes) else command
    return _REPLY_PREFIX.get(text.partition(":")[0], "OK")


def _failed_run(msg: str) -> bool:
    """A ``run:`` reply with a non-zero status: never one that overtook another, but the answer."""
    return msg.startswith("OK:RETVAL(") and not msg.startswith("OK:RETVAL(0)")


def _quote(msg: str) -> str:
    """A reply for an error report: its start (the status) and its end (a command's last output)."""
    return msg if len(msg) <= 600 else f"{msg[:200]} [...] {msg[-400:]}"


def _to_bytes(command: str | bytes) -> bytes:
    return command if isinstance(command, bytes) else command.encode()


class MachineState:
    """One (expected reply, command) pair: wait for ``expect``, send ``command``, go on.

    ``expect`` None means "do not wait"; ``command`` None means "send nothing". ``info`` is
    shared by every state of one worker's machine, so states pass values forward through it.
    """

    expect: ClassVar[str | None] = None
    command: ClassVar[str | bytes | None] = None
    nextState: ClassVar[Any] = None
    extra: ClassVar[str] = ""

    def __init__(self, prevState: MachineState | None = None, aNum: int = 0) -> None:
        self.info: dict[str, Any] = prevState.info if prevState is not None else {}
        self.actorNum: int = prevState.actorNum if prevState is not None else aNum
        self.outbox: list[bytes] = []

    # -- what the machine asks of a state ---------------------------------------------------

    def get_expect(self) -> str | None:
        return self.expect

    def get_command(self) -> str | bytes | None:
        return self.command

    def waiting(self) -> bool:
        """True while the state needs a message before it can move."""
        return self.get_expect() is not None

    def accepts(self, msg: str) -> bool:
        expect = self.get_expect()
        return expect is not None and msg.startswith(expect)

    def transition(self, msg: str) -> MachineState:
        """Consume an accepted message; return the next state (possibly ``self``)."""
        return self.post_transition()

    def post_transition(self) -> MachineState:
        """Move on without a message: send the command, build the next state."""
        self.send(self.get_command())
        return self.next_state()

    def on_info(self, key: str, value: Any) -> MachineState:
        """An ``INFO:key:value`` arrived (``info`` is already updated)."""
        return self

    # -- helpers ----------------------------------------------------------------------------

    def send(self, command: str | bytes | None) -> None:
        if command is not None:
            self.outbox.append(_to_bytes(command))

    def next_state(self) -> MachineState:
        if self.nextState is None:
            raise TypeError(f"{type(self).__name__} has no nextState; set it on the class")
        return self.nextState(self)

    def __str__(self) -> str:
        return f"{type(self).__name__}{' ' + self.extra if self.extra else ''}"


class TerminalState(MachineState):
    """A state the machine never leaves; the worker is done."""

    def waiting(self) -> bool:
        return False

    def accepts(self, msg: str) -> bool:
        return False


class ErrorState(TerminalState):
    """Where a worker ends when something went wrong; ``error`` says what."""

    extra = "(error)"
    error: str = "unknown error"


class OnePassState(MachineState):
    """Wait for one reply, send one command, move on (mu's default shape)."""


class MultiPassState(MachineState):
    """A state that consumes several messages before moving on; subclasses return ``self``."""


class CommandListState(MultiPassState):
    """A straight line of (reply, command) steps.

    ``commandlist`` entries are a command string, whose expected reply is derived from the
    previous command, or a ``(reply, command)`` tuple in which ``None`` means "send without
    waiting" (reply) or "wait without sending" (command). With ``pipelined`` every command is
    sent when the state is entered and the replies are consumed in order afterwards.
    """

    commandlist: list[Any] = []  # a class attribute in mu jobs; may be set per instance
    pipelined: ClassVar[bool] = False

    def __init__(self, prevState: MachineState | None = None, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        self.expects: list[str | None] = []
        self.commands: list[str | bytes | None] = []
        previous: str | bytes | None = None
        for entry in self.commandlist:
            if isinstance(entry, tuple):
                expect, command = entry
            else:
                expect, command = expected_reply(previous), entry
            self.expects.append(expect)
            self.commands.append(command)
            previous = command if command is not None else previous
        self.step = 0

    def format_commands(self, **fields: Any) -> None:
        """Fill ``{name}`` fields of the text commands (mu jobs did this by hand in __init__)."""
        self.commands = [c.format(**fields) if isinstance(c, str) else c for c in self.commands]

    def get_expect(self) -> str | None:
        if self.pipelined:
            self._send_all()
            while self.step < len(self.expects) and self.expects[self.step] is None:
                self.step += 1
        return self.expects[self.step] if self.step < len(self.expects) else None

    def get_command(self) -> str | bytes | None:
        return self.commands[self.step] if self.step < len(self.commands) else None

    def _send_all(self) -> None:
        # Sent when the state is first consulted; subclasses may rewrite self.commands in
        # __init__ (mu's idiom), so this cannot happen in the constructor.
        if not getattr(self, "_sent_all", False):
            self._sent_all = True
            for command in self.commands:
                self.send(command)

    def transition(self, msg: str) -> MachineState:
        return self._advance()

    def post_transition(self) -> MachineState:
        return self._advance()

    def _advance(self) -> MachineState:
        if not self.pipelined:
            self.send(self.get_command())
        self.step += 1
        if self.step >= len(self.expects):
            return self.next_state()
        return self


class IfElseState(MachineState):
    """Branch without a message: ``testfn()`` picks ``consequentState`` or ``alternativeState``."""

    consequentState: ClassVar[Any] = None
    alternativeState: ClassVar[Any] = None

    def testfn(self) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must define testfn()")

    def next_state(self) -> MachineState:
        target = self.consequentState if self.testfn() else self.alternativeState
        if target is None:
            raise TypeError(f"{type(self).__name__} lacks consequentState or alternativeState")
        return target(self)


class ForLoopState(MachineState):
    """A counted loop: ``info[iterKey]`` runs from ``iterInit`` while below ``iterFin``.

    Entering the state initialises or increments the counter; when it reaches ``iterFin``, or
    ``info[breakKey]`` is set to something other than None, the loop goes to ``exitState``
    and forgets the counter so the loop can be entered afresh later.
    """

    loopState: ClassVar[Any] = None
    exitState: ClassVar[Any] = None
    iterKey: ClassVar[str] = "iter"
    iterInit: ClassVar[int] = 0
    iterFin: Any = 0
    breakKey: ClassVar[str | None] = None

    def __init__(self, prevState: MachineState | None = None, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        if self.iterKey in self.info:
            self.info[self.iterKey] += 1
        else:
            self.info[self.iterKey] = self.iterInit

    def next_state(self) -> MachineState:
        broken = self.breakKey is not None and self.info.get(self.breakKey) is not None
        if broken or self.info[self.iterKey] >= self.iterFin:
            del self.info[self.iterKey]
            return self.exitState(self)
        return self.loopState(self)


class InfoWatcherState(MachineState):
    """Waits until an ``INFO`` message sets ``info[watchKey]`` (e.g. ``INFO:file:NAME``)."""

    watchKey: ClassVar[str] = ""
    watchValue: ClassVar[Any] = None  # None: any value will do

    def ready(self) -> bool:
        if self.watchKey not in self.info:
            return False
        return self.watchValue is None or self.info[self.watchKey] == self.watchValue

    def waiting(self) -> bool:
        return not self.ready()

    def accepts(self, msg: str) -> bool:
        return False


class SuperpositionState(MachineState):
    """Runs several sub-machines side by side; moves to ``nextState`` when all have ended.

    ``state_constructors`` lists the first state of each branch; a branch ends in a
    :class:`TerminalState`. A reply goes to the first branch that accepts it, ``INFO`` to all.
    """

    state_constructors: ClassVar[list[Any]] = []

    def __init__(self, prevState: MachineState | None = None, aNum: int = 0) -> None:
        super().__init__(prevState, aNum)
        self.branches = [
            Machine(cls, self.actorNum, info=self.info, parent=self) for cls in self.state_constructors
        ]
        self._collect()

    def _collect(self) -> None:
        for branch in self.branches:
            self.outbox.extend(branch.drain())

    def _failed(self) -> ErrorState | None:
        for branch in self.branches:
            if isinstance(branch.state, ErrorState):
                return branch.state
        return None

    def waiting(self) -> bool:
        return self._failed() is None and any(b.waiting() for b in self.branches)

    def accepts(self, msg: str) -> bool:
        return any(b.state.accepts(msg) for b in self.branches)

    def transition(self, msg: str) -> MachineState:
        for branch in self.branches:
            if branch.state.accepts(msg):
                self.outbox.extend(branch.receive(msg.encode()))
                break
        return self._after()

    def on_info(self, key: str, value: Any) -> MachineState:
        for branch in self.branches:
            branch.notify_info(key, value)
        return self._after()

    def _after(self) -> MachineState:
        """Stay while any branch runs; the machine moves on once none is waiting."""
        self._collect()
        failed = self._failed()
        if failed is not None:
            err = ErrorState(self)
            err.error = failed.error
            return err
        return self

    def post_transition(self) -> MachineState:
        self.send(self.get_command())
        return self.next_state()


class _Root(MachineState):
    """Carries a job's initial ``info`` and the actor number into the first state."""

    def __init__(self, info: dict[str, Any], actorNum: int) -> None:
        super().__init__(None, actorNum)
        self.info = info


class Machine:
    """Walks one worker through a state graph: replies in, commands out."""

    def __init__(
        self,
        initial: Callable[..., MachineState],
        actorNum: int,
        info: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        parent: MachineState | None = None,
    ) -> None:
        self.clock = clock
        self.history: list[tuple[str, float]] = []
        self.requeued: deque[str] = deque()
        self._out: list[bytes] = []
        root = parent if parent is not None else _Root(info if info is not None else {}, actorNum)
        self.state: MachineState = root
        self._enter(self._guard(lambda: initial(root, actorNum)))
        self.settle()

    # -- public -----------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        return self.state.info

    @property
    def done(self) -> bool:
        return isinstance(self.state, TerminalState)

    @property
    def failed(self) -> bool:
        return isinstance(self.state, ErrorState)

    @property
    def error(self) -> str | None:
        return self.state.error if isinstance(self.state, ErrorState) else None

    def waiting(self) -> bool:
        return not self.done and self.state.waiting()

    def drain(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive(self, raw: bytes) -> list[bytes]:
        """Feed one reply from the worker; return the commands to send now."""
        msg = raw.decode("utf-8", "replace")
        self._handle(msg)
        self._replay()
        return self.drain()

    def fail(self, reason: str) -> None:
        """The server saw something the machine cannot (timeout, disconnect)."""
        if not self.done:
            self._error(reason)

    # -- internals --------------------------------------------------------------------------

    def _handle(self, msg: str) -> None:
        if self.done:
            return
        if msg.startswith("INFO:"):
            key, _, value = msg[5:].partition(":")
            self.info[key] = int(value) if value.lstrip("-").isdigit() else value
            self.notify_info(key, self.info[key])
            return
        elif msg.startswith("FAIL"):
            self._error(f"in {self.state}: worker replied {msg[:500]}")
            return
        elif self.state.accepts(msg):
            self._enter(self._guard(lambda: self.state.transition(msg)))
        elif msg.startswith("OK") and not _failed_run(msg) and len(self.requeued) < MAX_REQUEUED:
            self.requeued.append(msg)  # a reply that overtook another in nonblock mode
            return
        else:
            self._error(f"in {self.state}: expected {self.state.get_expect()!r}, got {_quote(msg)!r}")
            return
        self.settle()

    def notify_info(self, key: str, value: Any) -> None:
        """Let the current state react to a changed ``info`` entry."""
        if not self.done:
            self._enter(self._guard(lambda: self.state.on_info(key, value)))
            self.settle()

    def _replay(self) -> None:
        progressed = True
        while progressed and self.requeued and not self.done:
            progressed = False
            for i, msg in enumerate(self.requeued):
                if self.state.accepts(msg):
                    del self.requeued[i]
                    self._handle(msg)
                    progressed = True
                    break

    def settle(self) -> None:
        """Run every state that needs no message, collecting what they send."""
        for _ in range(100_000):
            waiting = self.done or self.state.waiting()
            self._collect()
            if waiting:
                return
            self._enter(self._guard(self.state.post_transition))
        self._error(
            f"in {self.state}: 100000 transitions without waiting for the worker; is the loop endless?"
        )

    def _guard(self, step: Callable[[], MachineState]) -> MachineState:
        try:
            return step()
        except Exception as exc:  # a bug in a job's state class must not take the server down
            err = ErrorState(self.state)
            err.error = f"in {self.state}: {type(exc).__name__}: {exc}"
            return err

    def _collect(self) -> None:
        if self.state.outbox:
            self._out.extend(self.state.outbox)
            self.state.outbox.clear()

    def _enter(self, state: MachineState) -> None:
        self._collect()
        if state is not self.state:
            self.state = state
            self.history.append((str(state), self.clock()))
            self._collect()

    def _error(self, reason: str) -> None:
        err = ErrorState(self.state)
        err.error = reason
        self._enter(err)
