"""mu.map's scheduler without sockets: load balancing, exactly-once results, retries, speculation."""

from __future__ import annotations

import pytest

from lambda_worker.pycall import protocol as p
from mu.schedule import CallSpec, Outcome, Scheduler, Send

FN = "ab" * 16


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scheduler(**kw) -> Scheduler:
    s = Scheduler(clock=Clock(), **kw)
    s.add_function(FN, "cloudpickle", p.Payload(b"zip"))
    return s


def specs(n: int, group: int = 0, start: int = 0) -> list[CallSpec]:
    return [CallSpec(i, FN, p.Payload(b"args%d" % i), group=group) for i in range(start, start + n)]


def sent(actions, worker: int | None = None) -> list[str]:
    """The commands sent, as 'name:ident' (functions as 'define')."""
    out = []
    for a in actions:
        if isinstance(a, Send) and (worker is None or a.worker == worker):
            name, _, rest = a.frame.partition(b":")
            out.append(
                "define" if name == b"py_function" else f"{name.decode()}:{rest.split(b':')[0].decode()}"
            )
    return out


def outcomes(actions) -> list[Outcome]:
    return [a for a in actions if isinstance(a, Outcome)]


def done(s: Scheduler, worker: int, ident: str, what: str = "result", **kw):
    return s.reply(worker, p.Reply(what, ident, p.Payload(b"v"), **kw))


def test_a_worker_gets_the_function_once_then_a_window_of_calls_in_order():
    s = scheduler(window=2)
    assert s.submit(specs(5)) == []  # no worker yet
    assert sent(s.worker_ready(7)) == ["define", "py_call:0.0", "py_call:1.0"]
    assert sent(done(s, 7, "0.0")) == ["py_call:2.0"]  # the next item as each finishes; no second define


def test_items_go_to_whichever_worker_frees_a_slot_first():
    s = scheduler(window=1)
    s.submit(specs(4))
    assert sent(s.worker_ready(1)) == ["define", "py_call:0.0"]
    assert sent(s.worker_ready(2)) == ["define", "py_call:1.0"]
    assert sent(done(s, 2, "1.0")) == ["py_call:2.0"]  # worker 2 is faster: it takes item 2 ...
    assert sent(done(s, 2, "2.0")) == ["py_call:3.0"]  # ... and item 3, while 1 still runs item 0


def test_every_call_resolves_exactly_once_in_any_reply_order():
    s = scheduler(window=3)
    s.submit(specs(3))
    s.worker_ready(0)
    got = outcomes(done(s, 0, "2.0") + done(s, 0, "0.0") + done(s, 0, "1.0") + done(s, 0, "1.0"))
    assert [o.index for o in got] == [2, 0, 1] and s.idle


def test_a_raised_exception_is_an_outcome_and_not_retried():
    s = scheduler(retries=3)
    s.submit(specs(1))
    s.worker_ready(0)
    (o,) = outcomes(done(s, 0, "0.0", what="raised"))
    assert o.what == "raised" and o.attempts == 1


def test_a_failed_attempt_is_retried_first_in_the_queue_then_fails_with_the_reason():
    s = scheduler(window=1, retries=1)
    s.submit(specs(2))
    s.worker_ready(0)
    actions = s.reply(0, p.Reply("failed", "0.0", kind="exit", text="exited with status 3"))
    assert sent(actions) == ["py_call:0.1"]  # the retry goes before item 1
    actions = s.reply(0, p.Reply("failed", "0.1", kind="exit", text="exited with status 3"))
    (o,) = outcomes(actions)
    assert (o.what, o.kind, o.text) == ("failed", "exit", "exited with status 3 (after 2 attempts)")
    assert sent(actions) == ["py_call:1.0"]


def test_a_lost_worker_hands_its_calls_to_the_others():
    s = scheduler(window=2, retries=1)
    s.submit(specs(3))
    s.worker_ready(0)
    s.worker_ready(1)
    assert sent(s.worker_gone(0, "connection lost")) == ["py_call:0.1"]  # worker 1's free slot, in order
    assert list(s.queue) == [1]
    assert sent(done(s, 1, "2.0")) == ["py_call:1.1"]


def test_without_retries_a_lost_worker_fails_only_its_own_calls():
    s = scheduler(window=1)
    s.submit(specs(2))
    s.worker_ready(0)
    s.worker_ready(1)
    (o,) = outcomes(s.worker_gone(0, "connection lost: reset"))
    assert (o.index, o.kind, o.text) == (0, "worker", "connection lost: reset")
    assert [x.index for x in outcomes(done(s, 1, "1.0"))] == [1] and s.idle


def test_when_no_worker_is_left_the_waiting_calls_fail_with_the_reason():
    s = scheduler(retries=1)
    s.submit(specs(2))
    s.worker_ready(0)
    s.worker_gone(0, "killed")
    got = outcomes(s.fail_waiting("no worker left: all 1 workers ended"))
    assert [o.index for o in got] == [0, 1]
    assert got[0].text == "killed; then no worker left: all 1 workers ended" and s.idle


def test_speculation_duplicates_the_stragglers_and_the_first_finisher_wins():
    s = scheduler(window=1, speculate=50)
    s.submit(specs(2))
    s.worker_ready(0)
    s.worker_ready(1)
    s.worker_ready(2)
    actions = done(s, 1, "1.0")  # half done: item 0 (on worker 0) gets a duplicate on a free worker
    assert sent(actions) in (["py_call:0.1"],) and sent(actions, 0) == []
    actions = done(s, 0, "0.0")  # the original wins; the duplicate is cancelled
    assert [o.index for o in outcomes(actions)] == [0]
    assert "py_cancel:0.1" in sent(actions)
    assert outcomes(done(s, 1, "0.1")) == [] and outcomes(done(s, 2, "0.1")) == []


def test_a_duplicate_never_goes_to_the_worker_running_the_original():
    s = scheduler(window=2, speculate=50)
    s.submit(specs(2))
    s.worker_ready(0)
    assert sent(done(s, 0, "1.0")) == []  # only worker 0 exists: item 0 waits for another one
    assert sent(s.worker_ready(1)) == ["define", "py_call:0.1"]


def test_a_function_that_cannot_be_loaded_fails_all_its_calls_once():
    s = scheduler(window=2)
    s.submit(specs(3))
    s.worker_ready(0)
    got = outcomes(s.reply(0, p.Reply("define_failed", FN, text="ModuleNotFoundError: numpy")))
    assert [(o.index, o.what) for o in got] == [(0, "unloadable"), (1, "unloadable"), (2, "unloadable")]
    assert s.idle and outcomes(s.reply(0, p.Reply("define_failed", FN, text="again"))) == []
    (late,) = outcomes(s.submit(specs(1, start=3)))
    assert late.what == "unloadable" and "numpy" in late.text


def test_a_cancelled_call_leaves_the_queue_or_is_stopped_on_its_worker_and_never_resolves():
    s = scheduler(window=1)
    s.submit(specs(3))
    s.worker_ready(0)
    assert s.cancel(1) == []  # queued: just dropped
    assert sent(s.cancel(0)) == ["py_cancel:0.0", "py_call:2.0"]  # running: stopped, the slot refilled
    assert outcomes(done(s, 0, "0.0")) == []
    assert [o.index for o in outcomes(done(s, 0, "2.0"))] == [2] and s.idle


def test_submitting_an_unknown_function_or_an_index_twice_is_refused():
    s = scheduler()
    s.submit(specs(1))
    with pytest.raises(ValueError, match="twice"):
        s.submit(specs(1))
    with pytest.raises(ValueError, match="not added"):
        s.submit([CallSpec(9, "cd" * 16, p.Payload(b""))])
