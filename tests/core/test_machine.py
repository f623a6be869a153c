"""mu's state classes, sans-I/O: replies in, commands out, no sockets."""

from __future__ import annotations

from coordinator.core.machine import (
    CommandListState,
    ErrorState,
    ForLoopState,
    IfElseState,
    InfoWatcherState,
    Machine,
    OnePassState,
    SuperpositionState,
    TerminalState,
    expected_reply,
)


class Final(TerminalState):
    extra = "(done)"


class Config(CommandListState):
    nextState = Final
    commandlist = [("OK:HELLO", "seti:nonblock:0"), "set:a:{actor}", "run:", None]

    def __init__(self, prevState, aNum=0):
        super().__init__(prevState, aNum)
        self.commands = [c.format(actor=self.actorNum) if isinstance(c, str) else c for c in self.commands]


def test_expected_reply_prefixes():
    assert expected_reply("set:x:1") == "OK:SET("
    assert expected_reply(b"retrieve:") == "OK:RETRIEV"
    assert expected_reply("run:ls") == "OK:R"
    assert expected_reply(None) == "OK"
    assert expected_reply("quit:") == "OK"


def test_commandlist_waits_for_derived_replies():
    m = Machine(Config, actorNum=7)
    assert m.drain() == [] and m.waiting()  # the client goes first
    assert m.receive(b"OK:HELLO") == [b"seti:nonblock:0"]
    assert m.receive(b"OK:SETI(nonblock)") == [b"set:a:7"]
    assert m.receive(b"OK:SET(a)") == [b"run:"]
    assert not m.done
    assert m.receive(b"OK:RETVAL(0):OUTPUT():COMMAND(x)") == []
    assert m.done and not m.failed
    assert [name for name, _ in m.history] == ["Config", "Final (done)"]


def test_none_reply_sends_without_waiting():
    class Send(CommandListState):
        nextState = Final
        commandlist = [(None, "set:a:1"), "set:b:2", ("OK:SET(b)", None)]

    m = Machine(Send, 0)
    assert m.drain() == [b"set:a:1"]
    assert m.receive(b"OK:SET(a)") == [b"set:b:2"]
    assert m.receive(b"OK:SET(b)") == [] and m.done


def test_pipelined_sends_everything_at_once():
    class Pipe(CommandListState):
        nextState = Final
        pipelined = True
        commandlist = [(None, "set:a:1"), "set:b:2", "echo:x", ("OK:ECHO(x)", None)]

    m = Machine(Pipe, 0)
    assert m.drain() == [b"set:a:1", b"set:b:2", b"echo:x"]
    m.receive(b"OK:SET(a)")
    m.receive(b"OK:SET(b)")
    assert not m.done
    m.receive(b"OK:ECHO(x)")
    assert m.done and not m.failed


def test_fail_reply_moves_to_error_state():
    m = Machine(Config, 0)
    m.receive(b"OK:HELLO")
    m.receive(b"FAIL(seti: value 'x' for 'nonblock' is not an integer)")
    assert m.failed and isinstance(m.state, ErrorState)
    assert "worker replied FAIL(seti" in (m.error or "")


def test_unexpected_non_ok_reply_is_an_error():
    m = Machine(Config, 0)
    m.receive(b"HELLO?")
    assert m.failed and "expected 'OK:HELLO'" in (m.error or "")


def test_info_updates_shared_info_without_consuming_a_step():
    m = Machine(Config, 0)
    assert m.receive(b"INFO:deadline_ms:900000") == []
    assert m.info["deadline_ms"] == 900000
    assert m.receive(b"OK:HELLO") == [b"seti:nonblock:0"]


def test_out_of_order_replies_are_requeued():
    class Two(CommandListState):
        nextState = Final
        commandlist = [(None, "run:a"), ("OK:RETVAL(0):OUTPUT(a)", None), ("OK:UPLOAD(b/k)", None)]

    m = Machine(Two, 0)
    m.drain()
    assert m.receive(b"OK:UPLOAD(b/k)") == []  # arrives first: held, not an error
    assert not m.failed and len(m.requeued) == 1
    m.receive(b"OK:RETVAL(0):OUTPUT(a):COMMAND(a)")
    assert m.done and not m.failed and not m.requeued


class Body(CommandListState):
    commandlist = [(None, "echo:{i}"), ("OK:ECHO(", None)]

    def __init__(self, prevState, aNum=0):
        super().__init__(prevState, aNum)
        self.commands = [c.format(i=self.info["i"]) if c else c for c in self.commands]


class Loop(ForLoopState):
    loopState = Body
    exitState = Final
    iterKey = "i"
    iterInit = 2
    iterFin = 5
    breakKey = "stop"


Body.nextState = Loop


def test_for_loop_counts_from_init_to_fin():
    m = Machine(Loop, 0)
    sent = m.drain()
    while not m.done:
        sent += m.receive(b"OK:ECHO(x)")
    assert sent == [b"echo:2", b"echo:3", b"echo:4"]
    assert "i" not in m.info  # a finished loop forgets its counter


def test_for_loop_break_key():
    m = Machine(Loop, 0)
    assert m.drain() == [b"echo:2"]
    m.receive(b"INFO:stop:1")
    assert m.receive(b"OK:ECHO(2)") == []
    assert m.done and not m.failed


def test_if_else_chooses_by_testfn():
    class Yes(Final):
        extra = "(yes)"

    class No(Final):
        extra = "(no)"

    class Branch(IfElseState):
        consequentState = Yes
        alternativeState = No

        def testfn(self):
            return self.actorNum % 2 == 0

    assert isinstance(Machine(Branch, 2).state, Yes)
    assert isinstance(Machine(Branch, 3).state, No)


def test_info_watcher_wakes_on_info():
    class WaitFile(InfoWatcherState):
        watchKey = "file"
        command = "run:use ##TMPDIR##/state"
        nextState = Final

    m = Machine(WaitFile, 0)
    assert m.drain() == [] and m.waiting()
    assert m.receive(b"INFO:other:1") == []
    assert m.receive(b"INFO:file:state") == [b"run:use ##TMPDIR##/state"]
    assert m.done


def test_superposition_runs_branches_side_by_side():
    class RunBranch(CommandListState):
        nextState = Final
        commandlist = [(None, "run:encode"), ("OK:RETVAL(0)", None)]

    class FileBranch(InfoWatcherState):
        watchKey = "file"
        nextState = Final

    class Both(SuperpositionState):
        state_constructors = [RunBranch, FileBranch]
        nextState = Final
        command = "quit:"

    m = Machine(Both, 0)
    assert m.drain() == [b"run:encode"]
    assert m.receive(b"OK:RETVAL(0):OUTPUT():COMMAND(encode)") == []
    assert not m.done
    assert m.receive(b"INFO:file:prev.state") == [b"quit:"]
    assert m.done and not m.failed


def test_superposition_branch_failure_fails_the_machine():
    class Strict(OnePassState):
        expect = "OK:ECHO(a)"
        nextState = Final

    class Both(SuperpositionState):
        state_constructors = [Strict, Strict]
        nextState = Final

    m = Machine(Both, 0)
    m.receive(b"FAIL(boom)")
    assert m.failed and "boom" in (m.error or "")


def test_bug_in_a_state_becomes_an_error_not_a_crash():
    class Broken(CommandListState):
        commandlist = [("OK:HELLO", "set:a:1")]  # no nextState

    m = Machine(Broken, 0)
    m.receive(b"OK:HELLO")
    assert m.failed and "has no nextState" in (m.error or "")


def test_endless_loop_without_waiting_is_caught():
    class Spin(IfElseState):
        def testfn(self):
            return True

    Spin.consequentState = Spin
    m = Machine(Spin, 0)
    assert m.failed and "without waiting" in (m.error or "")


def test_server_side_failure():
    m = Machine(Config, 3)
    m.fail("timed out after 5 s")
    assert m.failed and m.error == "timed out after 5 s"
    m.fail("again")
    assert m.error == "timed out after 5 s"
