"""mu's state machines with mu's exact semantics, sans-I/O.

A job is a graph of state classes. In mu every state *is* its worker's socket (``MachineState``
subclasses ``SocketNB``): a state reads replies into ``recv_queue``, ``do_handle`` consumes them,
and ``enqueue`` puts commands on ``send_queue``; a new state built from the previous one shares
both queues, ``info``, ``timestamps`` and ``stateinfo``. Here :class:`SocketNB` is the same
queue object with no socket behind it, so every rule of mu's ``machine_state.py`` holds as
written there (random "kick" messages that run a state at once, replies that go back in the
queue when a ``SuperpositionState`` cannot place them, INFO handled before anything else), and
:class:`Machine` is the thin wrapper the asyncio server drives: bytes in, commands out.

Public names and attributes are mu's (``commandlist``, ``nextState``, ``iterKey``, ``prevState``,
``messages``, ``str_extra`` ...) so mu job files run with their imports changed and nothing else.
Where this module differs from mu, the README's "Porting a mu job" table says so and why.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from coordinator.report.names import in_words

HEADER_FMT = "%012d %s"
MAX_TRANSITIONS = 100_000  # transitions in one do_handle before a loop counts as endless

# The reply that acknowledges each command, as mu's handler.expected_response knows it. ``send``
# is this project's relay command (mu had none), so a job can wait for ``OK:SEND`` by default.
REPLY_PREFIX = {
    "set": "OK:SET",
    "seti": "OK:SETI",
    "get": "OK:GET",
    "geti": "OK:GETI",
    "dump_vals": "OK:DUMP_VALS",
    "retrieve": "OK:RETRIEV",
    "upload": "OK:UPLOAD",
    "echo": "OK:ECHO",
    "run": "OK:R",
    "listen": "OK:LISTEN",
    "close_listen": "OK:CLOSE_LISTEN",
    "connect": "OK:CONNECT",
    "close_connect": "OK:CLOSE_CONNECT",
    "send": "OK:SEND",
}


def expected_response(msg: str) -> str:
    """The prefix of the reply that acknowledges ``msg`` (``"OK"`` for commands mu did not list).

    Note that ``OK:R`` (after ``run:``) also matches ``OK:RETVAL(1)``: a job that must see a
    zero exit status says so with an explicit ``("OK:RETVAL(0)", ...)`` entry, as mu's jobs do.
    """
    return REPLY_PREFIX.get(msg.split(":", 1)[0], "OK")


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rand_str(slen: int) -> str:
    """``slen`` random letters and digits: mu's never-matching expects and unique job prefixes."""
    return "".join(random.choice(_ALPHABET) for _ in range(slen))


class Debug:
    """mu's ``Defs.debug``: when set, every handled and requeued message is printed."""

    enabled = False


def _trace(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _as_text(msg: bytes | str) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg


HEADER_LEN = 13  # "%012d " before every framed message


def _command_text(msg: bytes | str) -> str:
    """A command as text; bytes that are not UTF-8 survive the round trip (surrogateescape)."""
    return msg.decode("utf-8", "surrogateescape") if isinstance(msg, bytes) else msg


class Link:
    """What a worker's first state is built on where mu passed the accepted socket.

    It knows only whether the connection is still open (an ``ErrorState`` closes it, as mu's
    closed the socket) and the job's seed ``info`` (empty for mu jobs; this project's jobs
    pass their settings there).
    """

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.open = True
        self.info: dict[str, Any] = dict(info or {})

    def close(self) -> None:
        self.open = False


class SocketNB:
    """mu's SocketNB as a pair of in-memory queues.

    ``recv_queue`` holds replies (text) waiting to be handled; ``send_queue`` holds commands
    waiting to be written, framed as mu framed them (``format_message``). A SocketNB built
    from another shares its queues, exactly as mu's did, which is what lets a state enqueue a
    command and hand the queue to the next state. There is no socket behind it:
    :class:`Machine` delivers replies and collects commands.
    """

    def __init__(self, sock: Any) -> None:
        if isinstance(sock, SocketNB):
            self.sock: Any = sock.sock
            self.want_write: bool = sock.want_write
            self.want_handle: bool = sock.want_handle
            self.recv_queue: deque[str] = sock.recv_queue
            self.send_queue: deque[str] = sock.send_queue
        else:
            self.sock = sock
            self.want_write = False
            self.want_handle = False
            self.recv_queue = deque()
            self.send_queue = deque()

    def close(self) -> None:
        if self.sock is None:
            return
        closer = getattr(self.sock, "close", None)
        if callable(closer):
            closer()
        self.sock = None

    @staticmethod
    def shutdown(*_: Any) -> None:
        pass

    def update_flags(self) -> None:
        self.want_handle = len(self.recv_queue) > 0
        self.want_write = len(self.send_queue) > 0

    def enqueue(self, msg: bytes | str) -> None:
        self.send_queue.append(self.format_message(msg))
        self.update_flags()

    @staticmethod
    def format_message(msg: bytes | str) -> str:
        """mu's frame: 12 digits of length, a space, the message (the server frames the
        UTF-8 bytes again when it writes them, so the length here counts characters)."""
        text = _command_text(msg)
        return HEADER_FMT % (len(text), text)

    def dequeue(self) -> str | None:
        if not self.recv_queue:
            return None
        msg = self.recv_queue.popleft()
        self.update_flags()
        return msg

    def deliver(self, messages: Iterable[bytes | str]) -> None:
        """What mu's ``do_read`` did once frames were complete: queue them for handling."""
        self.recv_queue.extend(_as_text(m) for m in messages)
        self.update_flags()

    def take_sent(self) -> list[bytes]:
        """What mu's ``do_write`` took: every queued command, in order, as bytes to write."""
        out = [frame[HEADER_LEN:].encode("utf-8", "surrogateescape") for frame in self.send_queue]
        self.send_queue.clear()
        self.update_flags()
        return out


class MachineState(SocketNB):
    """The base of every state: shares the queues, ``info`` and the timeline with its predecessor."""

    expect: Any = None
    extra = "(base class)"

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState)
        if isinstance(prevState, MachineState):
            self.prevState: MachineState | None = prevState
            self.actorNum: int = prevState.actorNum
            self.timestamps: list[float] = prevState.timestamps
            self.stateinfo: list[str] = prevState.stateinfo
            self.info: dict[str, Any] = prevState.info
        else:  # the first state of a worker
            self.prevState = None
            self.actorNum = actorNum
            self.timestamps = []
            self.stateinfo = []
            self.info = dict(getattr(prevState, "info", None) or {})
        self.messages: list[str] = []
        self.timestamps.append(time.time())
        self.stateinfo.append(type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self)}: {self}"

    def __str__(self) -> str:
        return f"{int(self.actorNum)}:{self.str_extra()}"

    def str_extra(self) -> str:
        return str(self.extra)

    def transition(self, _: str) -> MachineState:
        return self

    def info_updated(self) -> None:
        """Called after INFO messages changed ``info``; ``InfoWatcherState`` kicks itself here."""

    def get_expect(self) -> Any:
        return self.expect

    def do_handle(self) -> MachineState:
        """Handle what is queued: INFO messages first, then replies in order; returns the new state.

        A ``FAIL`` reply ends the worker in ``ErrorState``. A reply that a state refuses with
        ``ValueError`` (a ``SuperpositionState`` whose branches do not expect it yet) goes back
        into the queue, after the others, for the next round.
        """
        updated = False
        for info_msg in list(self.recv_queue):
            if info_msg[:4] != "INFO":
                continue
            if Debug.enabled:
                _trace(f"SERVER HANDLING ({self.actorNum}) {info_msg}")
            updated = True
            self.recv_queue.remove(info_msg)
            key, sep, value = info_msg[5:].partition(":")
            if not sep or not key:
                raise AttributeError("improper INFO message received")
            self.info[key] = value
        if updated:
            self.info_updated()

        state: MachineState = self
        state.update_flags()
        retries: list[str] = []
        steps = 0
        while state.want_handle:
            msg = state.dequeue() or ""
            if Debug.enabled:
                _trace(f"SERVER HANDLING ({self.actorNum}) {msg}")
            if msg[:4] == "FAIL":
                return ErrorState(self, msg)
            steps += 1
            if steps > MAX_TRANSITIONS:
                why = f"{MAX_TRANSITIONS} transitions without a reply from the worker; is a loop endless?"
                return ErrorState(state, why)
            try:
                state = state.transition(msg)
            except ValueError:
                if Debug.enabled:
                    _trace(f"SERVER REQUEUEING ({self.actorNum}) {msg}")
                retries.append(msg)
            if Debug.enabled:
                _trace(repr(state))
            state.update_flags()
        state.recv_queue.extend(retries)
        state.update_flags()
        return state


class TerminalState(MachineState):
    """A state the worker never leaves."""

    extra = "(terminal state)"


class ErrorState(TerminalState):
    """Where a worker ends when something went wrong; ``err`` says what. It closes the connection."""

    def __init__(self, prevState: Any, err: Any = "", actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        self.close()
        self.err = err

    def str_extra(self) -> str:
        return str(self.err)


class TerminatedState(ErrorState):
    """A worker stopped by the kill time (``-m``), as mu's server did."""

    extra = "(TERMINATED)"


class OnePassState(MachineState):
    """Wait for ``expect``, send ``command``, go to ``nextState``.

    With ``expect`` None the state makes up a random expect and "kicks" itself (puts that
    string at the front of the queue), so it runs at once without waiting for the worker.
    """

    command: Any = None
    expect: Any = None
    extra = "(one-pass state)"
    nextState: Any = TerminalState

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        if self.expect is None:
            self.expect = rand_str(32)
            self.kick()

    def kick(self) -> None:
        self.recv_queue.appendleft(self.expect)
        self.want_handle = True

    def transition(self, msg: str) -> MachineState:
        if msg[: len(self.expect)] != self.expect:
            return ErrorState(self, msg)
        if self.command is not None:
            self.enqueue(self.command)
        self.messages.append(msg)
        return self.post_transition()

    def post_transition(self) -> MachineState:
        return self.nextState(self)


class MultiPassState(MachineState):
    """Walks ``expects``/``commands`` in step; a None expect means "send the next without waiting"."""

    nextState: Any = TerminalState
    extra = "(multi-pass state)"

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        self.cmdNum = 0
        self.commands: list[Any] = []
        self.expects: list[Any] = []

    def transition(self, msg: str) -> MachineState:
        if self.cmdNum >= len(self.commands):
            return ErrorState(self, msg)
        expect = self.expects[self.cmdNum]
        if msg[: len(expect)] != expect:
            return ErrorState(self, msg)
        self.messages.append(msg)
        while True:
            command = self.commands[self.cmdNum]
            self.cmdNum += 1
            if command is not None:
                self.enqueue(command)
            if self.cmdNum >= len(self.commands):
                return self.nextState(self)
            if self.expects[self.cmdNum] is not None:
                return self

    def kick(self) -> None:
        self.recv_queue.appendleft(self.expects[self.cmdNum])
        self.want_handle = True

    def str_extra(self) -> str:
        return f"({self.extra} (#{self.cmdNum}))"

    def get_expect(self) -> Any:
        return self.expects[self.cmdNum]


class CommandListState(MultiPassState):
    """A straight line of commands, each sent when the reply it waits for arrives.

    An entry is ``(expect, command)`` or a bare command, whose expect is the reply prefix of
    the *previous* command (``OK:SET`` after ``set:``...); the first bare entry waits for
    ``"OK"``. An expect of None sends without waiting; a command of None only waits.

    ``pipelined``: every command is sent at once when the state starts, then the replies are
    awaited in order. The expects are still "the reply to the previous command", so the reply
    to the last command is left for the next state to wait for, as in mu.
    """

    nextState: Any = TerminalState
    commandlist: list[Any] = []
    pipelined = False

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        first = self.commandlist[0]
        self.expects = [first[0] if isinstance(first, tuple) else "OK"]
        self.commands = [entry[1] if isinstance(entry, tuple) else entry for entry in self.commandlist]
        later = [
            entry[0] if isinstance(entry, tuple) else expected_response(previous)
            for entry, previous in zip(self.commandlist[1:], self.commands[:-1], strict=False)
        ]
        if self.pipelined:
            # mu meant to drop None expects here but its filter tested the list, not the entry,
            # so a None expect stays and means "do not wait" there. Kept: jobs see mu's behaviour.
            self.commands = [c for c in self.commands if c is not None]
            self.expects += [None] * (len(self.commands) - 1) + later
            self.commands += [None] * len(later)
            assert len(self.expects) == len(self.commands), "Could not pipeline this state. No commands?"
        else:
            self.expects += later
        if self.expects[0] is None:
            self.expects[0] = rand_str(32)
            self.kick()

    def format_commands(self, *args: Any, **fields: Any) -> None:
        """``str.format`` every text command: the one-liner mu jobs write by hand in ``__init__``."""
        self.commands = [c.format(*args, **fields) if isinstance(c, str) else c for c in self.commands]


class IfElseState(OnePassState):
    """Branch at once: ``testfn()`` true goes to ``consequentState``, false to ``alternativeState``."""

    extra = "(ifelse state)"
    consequentState: Any = TerminalState
    alternativeState: Any = TerminalState

    def testfn(self) -> bool:
        return True

    def post_transition(self) -> MachineState:
        if self.testfn():
            return self.consequentState(self)
        return self.alternativeState(self)


class ForLoopState(OnePassState):
    """A counted loop over ``info[iterKey]``: ``iterInit`` .. ``iterFin - 1`` inside the body.

    Entered with ``info[breakKey]`` unset, it starts the count; each later entry moves on to the
    next value or leaves for ``exitState`` once the count is done or ``info[breakKey]`` is true.
    Leaving removes ``breakKey`` (so the loop may start afresh later) and keeps the counter.
    """

    loopState: Any = TerminalState
    exitState: Any = TerminalState
    breakKey = "_loop_break"
    iterKey = "iter_key"
    iterInit = 0
    iterFin: Any = 0

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        if self.info.get(self.breakKey) is None:
            self.info[self.iterKey] = self.iterInit - 1
            self.info[self.breakKey] = False

    def post_transition(self) -> MachineState:
        if self.info[self.iterKey] >= self.iterFin - 1 or self.info[self.breakKey]:
            del self.info[self.breakKey]
            return self.exitState(self)
        self.info[self.iterKey] += 1
        return self.loopState(self)

    def str_extra(self) -> str:
        return f"(for {int(self.iterInit)}; {int(self.info[self.iterKey])}; {int(self.iterFin)})"


class SuperpositionState(MachineState):
    """Several states side by side; a reply goes to the first one that expects it.

    The branches are built from this state's predecessor, so they share its queues and
    ``info``. A reply no live branch expects is put back in the queue (``ValueError``) until
    one does. Once every branch is terminal, the machine goes to ``nextState``.
    """

    state_constructors: list[Any] = [TerminalState]
    nextState: Any = TerminalState

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        super().__init__(prevState, actorNum)
        self.states: list[MachineState] = [make(prevState, actorNum) for make in self.state_constructors]

    def str_extra(self) -> str:
        return "(superposition:" + "".join(" " + s.str_extra() for s in self.states) + ")"

    def get_expect(self) -> list[Any]:
        expects: list[Any] = []
        for state in self.states:
            expect = state.get_expect()
            if isinstance(expect, list):
                expects.extend(expect)
            else:
                expects.append(expect)
        return expects

    def info_updated(self) -> None:
        for state in self.states:
            state.info_updated()
        self.update_flags()

    def _match_expect(self, msg: str, expect: Any) -> bool:
        if isinstance(expect, list):
            return any(self._match_expect(msg, e) for e in expect)
        return msg[: len(expect)] == expect

    def transition(self, msg: str) -> MachineState:
        for i, state in enumerate(self.states):
            if isinstance(state, TerminalState):
                continue
            if self._match_expect(msg, state.get_expect()):
                self.states[i] = state.transition(msg)
                break
        else:
            raise ValueError(msg)
        self.update_flags()
        if all(isinstance(s, TerminalState) for s in self.states):
            return self.nextState(self)
        return self


class InfoWatcherState(OnePassState):
    """Waits for any INFO message (``info_updated``), then sends ``command`` and moves on.

    It fires on every INFO, whatever the key; a job that waits for one key overrides
    ``info_updated`` and kicks only when ``info`` holds what it wants.
    """

    extra = "(infowatcher)"

    def __init__(self, prevState: Any, actorNum: int = 0) -> None:
        if self.expect is None:  # an expect nobody sends, so the base class does not kick
            self.expect = rand_str(32)
        super().__init__(prevState, actorNum)

    def info_updated(self) -> None:
        self.kick()


_BASE_EXTRAS = {
    cls.extra
    for cls in (MachineState, TerminalState, OnePassState, MultiPassState, IfElseState, InfoWatcherState)
}


def describe(state: MachineState) -> str:
    """A state's name for people: its ``str_extra()``, or the first line of its docstring when
    the class sets no ``extra`` of its own (this project's jobs document states that way)."""
    try:
        text = state.str_extra()
    except Exception as exc:  # a job's str_extra may read info that is not there yet
        text = f"({type(exc).__name__} in str_extra)"
    doc = type(state).__doc__
    if type(state).extra in _BASE_EXTRAS and doc and type(state).__module__ != __name__:
        text = doc.strip().splitlines()[0].rstrip(".")
        if isinstance(state, MultiPassState):
            text += f" (#{state.cmdNum})"
    return f"{type(state).__name__} {text}"


def _quote(text: str) -> str:
    """A reply for a report: its start (the status) and its end (a command's last output)."""
    return text if len(text) <= 600 else f"{text[:200]} [...] {text[-400:]}"


def _awaited(state: MachineState) -> str | None:
    """The reply ``state`` waits for, unless that is one of its own random kick strings."""
    try:
        expect = state.get_expect()
    except Exception:  # a job's get_expect may fail on a state it left half-made
        return None
    if not isinstance(expect, str):
        return None
    if isinstance(state, OnePassState) and type(state).expect is None:
        return None  # made up by OnePassState/InfoWatcherState; no reply will ever carry it
    if isinstance(state, CommandListState) and state.cmdNum == 0:
        first = state.commandlist[0] if state.commandlist else None
        if isinstance(first, tuple) and first[0] is None:
            return None
    return expect


class Machine:
    """One worker's state machine as the server sees it: replies in, commands out.

    It does what mu's server loop did around a state: deliver a read's complete messages and
    ``do_handle`` them, then ``do_handle`` again while the state still wants to (kicks and
    requeued replies), collect what was enqueued, and end the worker when its state is
    terminal. An exception in a job's state class ends that worker in ``ErrorState`` naming
    it, instead of stopping the whole server as in mu.
    """

    def __init__(
        self,
        initial: Callable[..., MachineState],
        actorNum: int,
        group: int | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.link = Link(info)
        self.actorNum = actorNum
        self.history: list[tuple[str, float]] = []  # (describe(state), time.time()) per state entered
        try:
            if group is None:
                self.state: MachineState = initial(self.link, actorNum)
            else:
                self.state = initial(self.link, actorNum, group)
        except Exception as exc:
            name = getattr(initial, "__name__", repr(initial))
            self.state = ErrorState(self.link, f"{type(exc).__name__} in {name}(): {exc}", actorNum)
        self._entered()
        self._settle()

    # -- what the server asks ---------------------------------------------------------------

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
        """Why the worker failed, for people: mu's ``err`` and the state it happened in."""
        if not isinstance(self.state, ErrorState):
            return None
        text = _quote(str(self.state.err))
        prev = self.state.prevState
        if prev is None or isinstance(prev, TerminalState):
            return text
        where = in_words(prev)
        if where in text:
            return text
        expect = _awaited(prev)
        waited = f", which expected {expect!r}" if expect is not None else ""
        return f"{text} (in {where}{waited})"

    def timeline(self) -> list[tuple[float, str]]:
        """mu's timing log entry: the creation time and class name of every state built."""
        return list(zip(self.state.timestamps, self.state.stateinfo, strict=False))

    def receive(self, *messages: bytes | str) -> list[bytes]:
        """Feed the complete messages of one read; returns the commands to send now."""
        if not self.done:
            self.state.deliver(messages)
            if self.state.want_handle:
                self._step(self.state.do_handle)
            self._settle()
        return self.drain()

    def drain(self) -> list[bytes]:
        """Commands waiting to be written; none once an ErrorState has closed the connection."""
        sent = self.state.take_sent()
        return sent if self.link.open else []

    def tick(self, now: float, kill_time: float | None, kill_state: Any = None) -> None:
        """mu's kill time: a worker alive more than ``kill_time`` seconds since its first state."""
        if kill_time is None or self.done or now - self.state.timestamps[0] <= kill_time:
            return
        make = kill_state or TerminatedState
        self._step(lambda: make(self.state, f"terminated after {kill_time:g} seconds"))

    def fail(self, reason: str) -> None:
        """Something only the server sees (a closed connection, the job ending)."""
        if not self.done:
            self._step(lambda: ErrorState(self.state, reason))

    def end(self, terminal: Callable[[MachineState], MachineState] = TerminalState) -> None:
        """A worker that no walk over states drives (a job's ``driver``) finished well."""
        if not self.done:
            self._step(lambda: terminal(self.state))

    # -- internals --------------------------------------------------------------------------

    def _settle(self) -> None:
        """mu's loop called ``do_handle`` on every state that still wanted it, pass after pass;
        here that repeats until only requeued replies are left that nothing will take yet."""
        while not self.done:
            if not self.link.open:  # a branch of a SuperpositionState failed and closed it
                self._step(lambda: ErrorState(self.state, "sock closed"))
                return
            state = self.state
            if not state.want_handle:
                return
            queued, sent = list(state.recv_queue), len(state.send_queue)
            self._step(state.do_handle)
            if self.state is state and list(state.recv_queue) == queued and len(state.send_queue) == sent:
                return

    def _step(self, step: Callable[[], MachineState]) -> None:
        try:
            state = step()
        except Exception as exc:  # a bug in a job's state class must not take the server down
            state = ErrorState(self.state, f"{type(exc).__name__} in {in_words(self.state)}: {exc}")
        if state is not self.state:
            self.state = state
            self._entered()

    def _entered(self) -> None:
        self.history.append((describe(self.state), time.time()))
