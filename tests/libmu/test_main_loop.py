"""``server_main_loop`` in this process, with real local workers: mu's ``states`` list, actor
order, group numbers, relays at ``-T``/``-R``, and a failure as exit status 1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from coordinator.jobs import load_job_file

JOB = str(Path(__file__).parent / "jobs" / "relay_greet_server.py")


def consecutive_free_ports(n: int) -> int:
    """A port P with P .. P+n-1 all free on 127.0.0.1 (relays listen on -T and the next -R - 1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + n > 65535:
            continue
        held = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no run of free ports")


def run_job_file(monkeypatch, tmp_path, *argv: str):
    module = load_job_file(JOB)  # a fresh module: its settings class starts from its defaults
    relay = consecutive_free_ports(2)
    monkeypatch.setattr("sys.argv", [JOB, "-t", "0", "-T", str(relay), "--log-dir", str(tmp_path / "logs"),
                                     "-O", str(tmp_path / "timing.json"), *argv])  # fmt: skip
    return module, relay


def test_states_hold_each_workers_final_state_in_connection_order(monkeypatch, tmp_path):
    module, relay = run_job_file(monkeypatch, tmp_path, "-n", "4", "-K", "2", "-R", "2")
    module.main()
    states = module.states
    assert [type(s).__name__ for s in states] == ["FinalState"] * 4
    assert [s.actorNum for s in states] == [0, 2, 1, 3]  # mu's rotating goose for -K 2 -n 4
    firsts = []
    for state in states:
        while state.prevState is not None:
            state = state.prevState
        firsts.append(state)
    assert [(s.actorNum, s.group) for s in firsts] == [(0, 0), (2, 1), (1, 0), (3, 1)]
    for first in firsts:  # each dialled its group's relay and ran its own command
        port = relay + first.group % 2
        assert first.messages[0] == "OK:HELLO"
        assert first.commands[0].startswith(f"connect:127.0.0.1:{port}:HELLO_STATE:")
        assert first.commands[1] == f"run:echo actor {first.actorNum} group {first.group} port {port}"


def test_a_failed_worker_ends_the_job_file_with_status_1_and_its_error_state(monkeypatch, tmp_path, capsys):
    module, _ = run_job_file(monkeypatch, tmp_path, "-n", "2")
    module.ServerInfo.fail_actor = 1
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 1
    by_actor = {s.actorNum: s for s in module.states}
    assert type(by_actor[0]).__name__ == "FinalState"
    assert type(by_actor[1]).__name__ == "ErrorState" and by_actor[1].err.startswith("OK:RETVAL(3)")
    err = capsys.readouterr().err
    assert (
        "1 of 2 workers failed" in err and "actor 1: OK:RETVAL(3)" in err and "expected 'OK:RETVAL(0)'" in err
    )


def test_a_port_in_use_names_the_job_files_own_flags(monkeypatch, tmp_path, capsys):
    """mu job files set the ports with -t and -T; a bind failure says so (mu run's jobs: --port)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("-T", "-t"):
            module = load_job_file(JOB)
            relay = consecutive_free_ports(1)
            ports = {"-t": "0", "-T": str(relay), flag: str(port)}
            monkeypatch.setattr("sys.argv", [JOB, "-t", ports["-t"], "-T", ports["-T"], "--log-dir",
                                             str(tmp_path / "logs"), "-n", "1"])  # fmt: skip
            with pytest.raises(SystemExit) as exc:
                module.main()
            assert exc.value.code == 1
            err = capsys.readouterr().err
            assert f"cannot listen on 127.0.0.1:{port}" in err and f"pick another port with {flag}" in err
            assert "--port" not in err and "--relay-port" not in err
