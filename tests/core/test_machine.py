"""mu's state-machine rules, one test each, named after the rule (mu's libmu/machine_state.py).

The machines are sans-I/O: a test feeds replies as a worker would send them and checks the
commands that come out, with no socket anywhere.
"""

from __future__ import annotations

import time

import pytest

from coordinator.core.machine import (
    CommandListState,
    Debug,
    ErrorState,
    ForLoopState,
    IfElseState,
    InfoWatcherState,
    Link,
    Machine,
    MachineState,
    MultiPassState,
    OnePassState,
    SocketNB,
    SuperpositionState,
    TerminalState,
    TerminatedState,
    describe,
    expected_response,
)


class Final(TerminalState):
    extra = "(done)"


def sent(machine: Machine, *replies: str) -> list[str]:
    """Feed replies one read at a time; everything the machine sends, decoded."""
    out = [c.decode() for c in machine.drain()]
    for reply in replies:
        out += [c.decode() for c in machine.receive(reply.encode())]
    return out


# -- CommandListState ------------------------------------------------------------------------


def test_expected_response_is_mus_table():
    assert expected_response("set:x:1") == "OK:SET"
    assert expected_response("seti:x:1") == "OK:SETI"
    assert expected_response("retrieve:") == "OK:RETRIEV"
    assert expected_response("upload:k\0f") == "OK:UPLOAD"
    assert expected_response("run:ls") == "OK:R"
    assert expected_response("connect:h:1:HELLO") == "OK:CONNECT"
    assert expected_response("quit:") == "OK"
    assert expected_response("nonsense") == "OK"


def test_commandlist_bare_entry_expects_the_reply_to_the_previous_command():
    class Config(CommandListState):
        nextState = Final
        commandlist = [("OK:HELLO", "seti:nonblock:0"), "set:a:1", "run:true", "upload:", None]

    m = Machine(Config, 7)
    assert m.state.expects == ["OK:HELLO", "OK:SETI", "OK:SET", "OK:R", "OK:UPLOAD"]
    assert sent(m) == []  # the worker speaks first
    assert sent(m, "OK:HELLO", "OK:SETI(nonblock)", "OK:SET(a)") == ["seti:nonblock:0", "set:a:1", "run:true"]
    # 'OK:R' accepts any exit status: a job that needs 0 says ("OK:RETVAL(0)", ...)
    assert sent(m, "OK:RETVAL(1):OUTPUT():COMMAND(true)", "OK:UPLOAD(b/k)") == ["upload:"]
    assert m.done and not m.failed and isinstance(m.state, Final)


def test_commandlist_first_bare_entry_waits_for_plain_ok():
    class Plain(CommandListState):
        commandlist = ["echo:x", "quit:"]

    m = Machine(Plain, 0)
    assert m.state.expects == ["OK", "OK:ECHO"]
    assert sent(m, "OK:HELLO", "OK:ECHO(x)") == ["echo:x", "quit:"]


def test_commandlist_none_expect_kicks_with_a_random_string():
    class Send(CommandListState):
        nextState = Final
        commandlist = [(None, "set:a:1"), "set:b:2", ("OK:SET(b)", None)]

    state = Send(Link(), 0)
    assert len(state.expects[0]) == 32 and state.expects[0].isalnum()
    assert list(state.recv_queue) == [state.expects[0]] and state.want_handle  # the kick
    m = Machine(Send, 0)
    assert sent(m) == ["set:a:1"]
    assert sent(m, "OK:SET(a)") == ["set:b:2"]
    assert sent(m, "OK:SET(b)") == [] and m.done


def test_commandlist_none_expect_midway_sends_the_next_command_at_once():
    class Linpack(CommandListState):  # mu's linpack_server: two runs, then four replies
        nextState = Final
        commandlist = [("OK:HELLO", "run:a"), (None, "run:b"), ("OK", None), ("OK", None)]

    m = Machine(Linpack, 0)
    assert sent(m, "OK:HELLO") == ["run:a", "run:b"]
    sent(m, "OK:RUNNING(a)", "OK:RUNNING(b)")
    assert m.done


def test_commandlist_mismatch_ends_in_error_state_holding_the_reply():
    class Strict(CommandListState):
        commandlist = [("OK:HELLO", "run:x"), ("OK:RETVAL(0)", "quit:")]

    m = Machine(Strict, 0)
    sent(m, "OK:HELLO", "OK:RETVAL(2):OUTPUT(boom):COMMAND(x)")
    assert m.failed and m.state.err == "OK:RETVAL(2):OUTPUT(boom):COMMAND(x)"
    assert m.error is not None and "which expected 'OK:RETVAL(0)'" in m.error


def test_multipass_str_extra_shows_the_step():
    class Steps(CommandListState):
        extra = "(steps)"
        commandlist = [("OK:HELLO", "set:a:1"), "set:b:2"]

    m = Machine(Steps, 3)
    assert str(m.state) == "3:((steps) (#0))"
    sent(m, "OK:HELLO")
    assert str(m.state) == "3:((steps) (#1))"


def test_pipelined_commandlist_sends_all_then_waits_for_the_replies_to_all_but_the_last():
    class PreRun(CommandListState):  # xcenc's XCEncPreRunState
        pipelined = True
        nextState = Final
        commandlist = [(None, "seti:run_iter:1"), "set:cmdquality:30", "seti:send_statefile:1", "run:cp a b"]

    state = PreRun(Link(), 0)
    assert state.commands == ["seti:run_iter:1", "set:cmdquality:30", "seti:send_statefile:1", "run:cp a b",
                              None, None, None]  # fmt: skip
    assert state.expects[1:] == [None, None, None, "OK:SETI", "OK:SET", "OK:SETI"]
    m = Machine(PreRun, 0)
    assert sent(m) == ["seti:run_iter:1", "set:cmdquality:30", "seti:send_statefile:1", "run:cp a b"]
    sent(m, "OK:SETI(run_iter)", "OK:SET(cmdquality)", "OK:SETI(send_statefile)")
    assert m.done  # the run's reply is left for the next state to wait for


def test_pipelined_commandlist_waits_for_its_first_expected_reply_first():
    class Settings(CommandListState):  # xcenc's XCEncSettingsState
        pipelined = True
        nextState = Final
        commandlist = [("OK:HELLO", "connect:h:1:HELLO_STATE:x:0:1"), "retrieve:k\0f", ("OK:RETRIEVE(", None)]

    m = Machine(Settings, 0)
    assert sent(m) == []
    assert sent(m, "OK:HELLO") == ["connect:h:1:HELLO_STATE:x:0:1", "retrieve:k\0f"]
    sent(m, "OK:CONNECT(h:1)")
    assert not m.done
    sent(m, "OK:RETRIEVE(b/k)")
    assert m.done


def test_pipelined_keeps_a_none_expect_as_do_not_wait():
    # mu's filter of None expects tested the list, not the entry, so it kept them. Kept.
    class Pipe(CommandListState):
        pipelined = True
        nextState = Final
        commandlist = [(None, "run:a"), (None, "run:b"), ("OK:R", None)]

    state = Pipe(Link(), 0)
    assert state.expects[1:] == [None, None, "OK:R"] and state.commands == ["run:a", "run:b", None, None]
    m = Machine(Pipe, 0)
    assert sent(m) == ["run:a", "run:b"]
    sent(m, "OK:RETVAL(0)")
    assert m.done


def test_format_commands_fills_every_text_command():
    class Fmt(CommandListState):
        commandlist = [("OK:HELLO", "set:a:{0}"), "set:b:{x}", ("OK:SET", None)]

    state = Fmt(Link(), 0)
    state.format_commands(5, x="y")
    assert state.commands == ["set:a:5", "set:b:y", None]


# -- OnePassState, IfElseState, defaults -------------------------------------------------------


def test_onepass_sends_its_command_in_transition_and_keeps_messages():
    class Wait(OnePassState):
        expect = "OK:RETVAL("
        command = "quit:"
        nextState = Final

    m = Machine(Wait, 0)
    first = m.state
    assert sent(m) == []
    assert sent(m, "OK:RETVAL(1):OUTPUT():COMMAND(x)") == ["quit:"]
    assert first.messages == ["OK:RETVAL(1):OUTPUT():COMMAND(x)"]
    assert m.state.prevState is first


def test_onepass_post_transition_reads_the_kept_message():
    class Converged(OnePassState):  # xcenc's XCEncCheckConvergedState
        expect = "OK:RETVAL("
        nextState = Final

        def post_transition(self):
            self.info["converged"] = self.messages[-1][:12] == "OK:RETVAL(0)"
            return self.nextState(self)

    m = Machine(Converged, 0)
    sent(m, "OK:RETVAL(1):OUTPUT():COMMAND(x)")
    assert m.info["converged"] is False


def test_onepass_without_expect_kicks_and_runs_at_once():
    class Quit(OnePassState):
        command = "quit:"
        nextState = Final

    m = Machine(Quit, 0)
    assert sent(m) == ["quit:"] and m.done


def test_next_states_default_to_terminal_state():
    assert OnePassState.nextState is TerminalState
    assert MultiPassState.nextState is TerminalState
    assert CommandListState.nextState is TerminalState
    assert SuperpositionState.nextState is TerminalState
    assert IfElseState.consequentState is TerminalState and IfElseState.alternativeState is TerminalState
    assert ForLoopState.loopState is TerminalState and ForLoopState.exitState is TerminalState
    m = Machine(OnePassState, 0)
    assert type(m.state) is TerminalState and not m.failed


def test_ifelse_testfn_defaults_to_true():
    class Yes(Final):
        pass

    class No(Final):
        pass

    class Branch(IfElseState):
        consequentState = Yes
        alternativeState = No

    assert IfElseState(Link(), 0).testfn() is True
    assert isinstance(Machine(Branch, 0).state, Yes)

    class Odd(Branch):
        def testfn(self):
            return self.actorNum % 2 == 1

    assert isinstance(Machine(Odd, 3).state, Yes)
    assert isinstance(Machine(Odd, 2).state, No)


# -- ForLoopState ------------------------------------------------------------------------------


class Body(CommandListState):
    commandlist = [(None, "echo:{0}"), ("OK:ECHO", None)]

    def __init__(self, prevState, aNum=0):
        super().__init__(prevState, aNum)
        self.format_commands(self.info["iter_key"])


class Loop(ForLoopState):
    loopState = Body
    exitState = Final
    iterInit = 2
    iterFin = 5


Body.nextState = Loop


def test_forloop_defaults_iter_key_and_loop_break():
    assert ForLoopState.iterKey == "iter_key" and ForLoopState.breakKey == "_loop_break"
    assert ForLoopState.iterInit == 0 and ForLoopState.iterFin == 0
    state = Loop(Link(), 0)
    assert state.info == {"iter_key": 1, "_loop_break": False}  # iterInit - 1 until the first pass


def test_forloop_runs_init_to_fin_minus_one_and_keeps_the_counter_after():
    m = Machine(Loop, 0)
    out = sent(m, "OK:ECHO(2)", "OK:ECHO(3)", "OK:ECHO(4)")
    assert out == ["echo:2", "echo:3", "echo:4"]
    assert m.done and m.info == {"iter_key": 4}  # breakKey removed, counter kept


def test_forloop_with_nothing_to_do_exits_at_once():
    class Empty(ForLoopState):
        loopState = Body
        exitState = Final

    m = Machine(Empty, 0)
    assert m.done and m.info == {"iter_key": -1}


def test_forloop_break_key_is_tested_for_truth():
    m = Machine(Loop, 0)
    assert sent(m) == ["echo:2"]
    m.info["_loop_break"] = 0  # false: the loop goes on
    assert sent(m, "OK:ECHO(2)") == ["echo:3"]
    sent(m, "INFO:_loop_break:0")  # INFO values are strings, and "0" is true
    assert sent(m, "OK:ECHO(3)") == [] and m.done


def test_forloop_starts_afresh_when_entered_again_after_exit():
    class InnerBody(Body):
        pass

    class Again(ForLoopState):
        loopState = InnerBody
        iterFin = 1

    class Twice(ForLoopState):
        loopState = Again
        exitState = Final
        iterKey = "outer"
        breakKey = "outer_break"
        iterFin = 2

    Again.exitState = Twice
    InnerBody.nextState = Again
    m = Machine(Twice, 0)
    assert sent(m, "OK:ECHO", "OK:ECHO") == ["echo:0", "echo:0"]
    assert m.done


def test_forloop_str_extra():
    state = Loop(Link(), 4)
    assert str(state) == "4:(for 2; 1; 5)"


# -- errors, INFO, timeline ----------------------------------------------------------------------


def test_error_state_takes_prev_state_and_err():
    first = OnePassState(Link(), 2)
    err = ErrorState(first, "went wrong")
    assert err.err == "went wrong" and err.prevState is first and err.actorNum == 2
    assert str(err) == "2:went wrong"
    assert err.sock is None  # it closed the connection
    assert isinstance(ErrorState(None, actorNum=5), TerminalState)


def test_states_share_queues_info_and_timeline_with_their_predecessor():
    first = MachineState(Link({"seed": 1}), 9)
    second = TerminalState(first)
    assert second.actorNum == 9 and second.prevState is first
    assert second.info is first.info and second.info == {"seed": 1}
    assert second.recv_queue is first.recv_queue and second.send_queue is first.send_queue
    assert second.timestamps is first.timestamps and len(second.timestamps) == 2
    assert second.stateinfo == ["MachineState", "TerminalState"]
    assert first.messages is not second.messages


def test_fail_reply_ends_in_error_state_from_the_state_that_handled_it():
    class Wait(OnePassState):
        expect = "OK:HELLO"
        command = "run:x"
        nextState = Final

    m = Machine(Wait, 0)
    first = m.state
    sent(m, "FAIL(no such command 'x')")
    assert m.failed and m.state.err == "FAIL(no such command 'x')" and m.state.prevState is first


def test_info_values_are_kept_as_strings_and_info_updated_is_called():
    calls = []

    class Watch(OnePassState):
        expect = "OK:HELLO"
        nextState = Final

        def info_updated(self):
            calls.append(dict(self.info))

    m = Machine(Watch, 0)
    sent(m, "INFO:deadline_ms:900000", "INFO:a:b:c")
    assert m.info == {"deadline_ms": "900000", "a": "b:c"}
    assert calls == [{"deadline_ms": "900000"}, {"deadline_ms": "900000", "a": "b:c"}]


def test_info_in_the_queue_is_handled_before_replies_that_came_first():
    class Use(OnePassState):
        expect = "OK:HELLO"
        nextState = Final

        def post_transition(self):
            self.info["seen"] = self.info.get("x")
            return self.nextState(self)

    m = Machine(Use, 0)
    m.receive(b"OK:HELLO", b"INFO:x:1")  # one read, INFO second
    assert m.info["seen"] == "1"


def test_an_improper_info_message_ends_the_worker_not_the_server():
    m = Machine(OnePassState, 0)
    m = Machine(Loop, 0)
    sent(m, "INFO:novalue")
    assert m.failed and "improper INFO message received" in (m.error or "")


def test_timestamps_and_stateinfo_record_every_state_built():
    before = time.time()
    m = Machine(Loop, 0)
    sent(m, "OK:ECHO", "OK:ECHO", "OK:ECHO")
    names = [name for _, name in m.timeline()]
    assert names == ["Loop", "Body", "Loop", "Body", "Loop", "Body", "Loop", "Final"]
    assert all(before <= t <= time.time() for t, _ in m.timeline())
    # the wrapper sees the states it stops in; states passed through in one step only in mu's list
    assert [h[0].split()[0] for h in m.history] == ["Loop", "Body", "Body", "Body", "Final"]


# -- SuperpositionState and InfoWatcherState ---------------------------------------------------


class Upload(CommandListState):
    commandlist = [("OK:RUNNING", None), ("OK:RETVAL(0)", "upload:")]


class SetB(OnePassState):
    command = "seti:nonblock:0"
    nextState = None  # set below


class SetBDone(OnePassState):
    expect = "OK:SETI"


class LoopB(ForLoopState):
    loopState = SetB
    iterFin = 3


SetB.nextState = SetBDone
SetBDone.nextState = LoopB


class Both(SuperpositionState):
    nextState = Final
    state_constructors = [Upload, LoopB]


class Hello(OnePassState):
    """Wait for the worker's hello; a SuperpositionState needs a predecessor to share queues with."""

    expect = "OK:HELLO"


def after_hello(state: type) -> type:
    return type(f"Hello{state.__name__}", (Hello,), {"nextState": state})


def test_superposition_places_each_reply_and_requeues_what_no_branch_expects():
    m = Machine(after_hello(Both), 0)
    assert sent(m, "OK:HELLO") == ["seti:nonblock:0"]
    assert sent(m, "OK:RETVAL(0):OUTPUT():COMMAND(x)") == []  # nobody expects it yet: requeued
    assert list(m.state.recv_queue) == ["OK:RETVAL(0):OUTPUT():COMMAND(x)"]
    assert sent(m, "OK:SETI(nonblock)") == ["seti:nonblock:0"]
    assert sent(m, "OK:RUNNING(x)") == ["upload:"]  # and the requeued RETVAL goes through now
    assert not m.done
    assert sent(m, "OK:SETI(nonblock)", "OK:SETI(nonblock)") == ["seti:nonblock:0"]
    assert m.done and isinstance(m.state, Final)


def test_superposition_branches_are_built_from_its_predecessor():
    start = Hello(Link(), 1)
    both = Both(start)
    assert all(s.prevState is start for s in both.states)
    assert all(s.info is start.info and s.send_queue is start.send_queue for s in both.states)
    assert str(both) == "1:(superposition: ((multi-pass state) (#0)) (for 0; -1; 3))"


def test_superposition_as_first_state_has_branches_on_queues_of_their_own():
    both = Both(Link(), 0)  # as in mu: built on the socket, each branch makes its own queues
    assert all(s.send_queue is not both.send_queue for s in both.states)


class IWKicker(CommandListState):  # mu's test/states.py: a geti makes an INFO for the watcher
    commandlist = [("OK:UPLOAD", "geti:nonblock"), ("OK:GETI", None)]


class RetrieveIW(InfoWatcherState):
    command = "retrieve:"


class InfoWatchTest(SuperpositionState):
    nextState = Final
    state_constructors = [RetrieveIW, IWKicker]


def test_infowatcher_fires_on_any_info_inside_a_superposition():
    m = Machine(after_hello(InfoWatchTest), 0)
    assert sent(m, "OK:HELLO") == []
    assert sent(m, "OK:UPLOAD(b/k)") == ["geti:nonblock"]
    assert sent(m, "INFO:nonblock:1", "OK:GETI(nonblock)") == ["retrieve:"]
    assert m.done and m.info["nonblock"] == "1"


def test_infowatcher_waits_without_kicking_until_an_info_arrives():
    class Watch(InfoWatcherState):
        command = "run:go"
        nextState = Final

    m = Machine(Watch, 0)
    assert sent(m) == [] and not m.state.want_handle and not m.done
    assert sent(m, "INFO:anything:x") == ["run:go"] and m.done


# -- the Machine wrapper -----------------------------------------------------------------------


def test_kill_time_counts_from_the_workers_first_state():
    m = Machine(Loop, 0)
    sent(m, "OK:ECHO")
    start = m.state.timestamps[0]
    m.tick(start + 10, 10)
    assert not m.failed  # not over yet: mu tests now - timestamps[0] > kill_time
    m.tick(start + 10.5, 10)
    assert m.failed and isinstance(m.state, TerminatedState)
    assert m.state.err == "terminated after 10 seconds" and m.state.extra == "(TERMINATED)"
    assert sent(m, "OK:ECHO") == []


def test_kill_time_uses_the_jobs_kill_state():
    class Killed(ErrorState):
        pass

    m = Machine(Loop, 0)
    m.tick(m.state.timestamps[0] + 5, 1, Killed)
    assert isinstance(m.state, Killed)


def test_error_state_closes_the_connection_and_drops_queued_commands():
    class Two(CommandListState):
        commandlist = [("OK:HELLO", "run:a"), (None, "run:b"), ("OK:R", None)]

    m = Machine(Two, 0)
    assert m.receive(b"OK:HELLO", b"FAIL(x)") == []  # run:a and run:b were never written
    assert m.failed and not m.link.open


def test_a_failed_branch_of_a_superposition_closes_the_connection():
    class Fails(CommandListState):
        nextState = ErrorState  # a branch that ends badly (xcenc's FinalState turns into one)
        commandlist = [("OK:A", None), ("OK:B", None)]

    class Stays(OnePassState):
        expect = "OK:NEVER"

    class Pair(SuperpositionState):
        state_constructors = [Fails, Stays]

    m = Machine(after_hello(Pair), 0)
    sent(m, "OK:HELLO", "OK:A", "OK:B")
    assert m.failed and m.error is not None and m.error.startswith("sock closed")


def test_a_bug_in_a_job_state_ends_that_worker_only():
    class Broken(OnePassState):
        expect = "OK:HELLO"

        def post_transition(self):
            return self.info["missing"]

    m = Machine(Broken, 0)
    sent(m, "OK:HELLO")
    assert m.failed and "KeyError" in (m.error or "") and "missing" in (m.error or "")

    def no_such(link, actor):
        raise RuntimeError("constructor exploded")

    assert "constructor exploded" in (Machine(no_such, 0).error or "")


def test_an_endless_loop_without_a_reply_is_caught():
    class Spin(IfElseState):
        pass

    Spin.consequentState = Spin
    m = Machine(Spin, 0)
    assert m.failed and "is a loop endless" in (m.error or "")


def test_group_number_goes_to_the_first_states_constructor():
    seen = []

    class Settings(CommandListState):
        commandlist = [("OK:HELLO", "set:g:{0}")]

        def __init__(self, prevState, aNum=0, gNum=0):
            super().__init__(prevState, aNum)
            seen.append((self.actorNum, gNum))
            self.format_commands(gNum)

    assert sent(Machine(Settings, 5, group=2), "OK:HELLO") == ["set:g:2"]
    Machine(Settings, 6)
    assert seen == [(5, 2), (6, 0)]


def test_server_side_failure_keeps_the_first_reason():
    m = Machine(Loop, 3)
    m.fail("sock closed")
    assert m.failed and m.error is not None and m.error.startswith("sock closed (in Body")
    m.fail("again")
    assert m.error.startswith("sock closed")


def test_describe_uses_str_extra_or_the_docstring():
    class Documented(CommandListState):
        """Fetch the inputs.

        More words.
        """

        commandlist = [("OK:HELLO", None)]

    class Named(CommandListState):
        extra = "(named)"
        commandlist = [("OK:HELLO", None)]

    assert describe(Documented(Link(), 0)) == "Documented Fetch the inputs (#0)"
    assert describe(Named(Link(), 0)) == "Named ((named) (#0))"
    assert describe(ErrorState(None, "boom")) == "ErrorState boom"


def test_socketnb_queue_api():
    a = SocketNB(None)
    a.enqueue("set:x:1")
    assert a.want_write and list(a.send_queue) == ["000000000007 set:x:1"]  # framed, as in mu
    b = SocketNB(a)
    assert b.send_queue is a.send_queue
    assert SocketNB.format_message("echo:héllo") == "000000000010 echo:héllo"
    b.enqueue(b"echo:\xff")
    b.deliver([b"OK:SET(x)"])
    assert b.want_handle and b.dequeue() == "OK:SET(x)" and b.dequeue() is None
    assert b.take_sent() == [b"set:x:1", b"echo:\xff"] and not b.want_write


def test_debug_prints_what_is_handled(capsys):
    Debug.enabled = True
    try:
        sent(Machine(Loop, 0), "OK:ECHO")
    finally:
        Debug.enabled = False
    assert "SERVER HANDLING (0) OK:ECHO" in capsys.readouterr().err


@pytest.mark.parametrize("reply", ["OK:HELLO", "OK:HELLO\udcff"])
def test_replies_are_text(reply):
    class Wait(OnePassState):
        expect = "OK:HELLO"
        command = "quit:"

    m = Machine(Wait, 0)
    assert m.receive(reply.encode("utf-8", "surrogateescape")) == [b"quit:"]
