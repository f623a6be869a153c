"""coordinator.libmu offers what mu's libmu offered job files, under the same names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import coordinator.libmu as libmu
from coordinator.core import machine
from coordinator.libmu import FDWrapper, defs, handler, machine_state, server, util

ROOT = Path(__file__).resolve().parents[2]


def test_package_exports_the_names_of_mus_libmu():
    # mu's libmu/__init__.py: Defs, SocketNB, FDWrapper and the ten state classes
    names = {
        "Defs",
        "SocketNB",
        "FDWrapper",
        "MachineState",
        "TerminalState",
        "ErrorState",
        "OnePassState",
        "MultiPassState",
        "CommandListState",
        "IfElseState",
        "ForLoopState",
        "SuperpositionState",
        "InfoWatcherState",
    }
    assert names <= set(libmu.__all__) and all(hasattr(libmu, n) for n in names)


def test_state_classes_are_the_cores_not_copies():
    assert libmu.CommandListState is machine.CommandListState
    assert machine_state.ForLoopState is machine.ForLoopState
    assert libmu.SocketNB is machine.SocketNB


def test_submodules_job_files_import():
    for name in (
        "options",
        "usage_str",
        "server_launch",
        "server_main_loop",
        "to_numlist",
        "_compute_actor_number",
    ):
        assert callable(getattr(server, name))
    assert callable(util.rand_str) and callable(handler.expected_response)
    with pytest.raises(AttributeError, match="opens the coordinator's TLS port itself"):
        server.setup_server_listen  # noqa: B018
    with pytest.raises(AttributeError, match="own the connections"):
        util.connect_socket  # noqa: B018


def test_importing_the_package_alone_makes_its_submodules_attributes():
    """mu's ``import libmu`` made ``libmu.util``, ``libmu.server`` ... usable (through
    machine_state's imports); a job file that says ``coordinator.libmu.util.rand_str`` after
    ``import coordinator.libmu`` works. A fresh interpreter, so no other test's import helps."""
    names = ["util", "handler", "server", "defs", "machine_state", "socket_nb", "fd_wrapper"]
    code = f"import coordinator.libmu as m; print([n for n in {names!r} if not hasattr(m, n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_defs_debug_is_the_state_machines_debug_switch():
    assert defs.Defs.header_fmt % (5, "hello") == "000000000005 hello" and defs.Defs.header_len == 13
    assert defs.Defs.timeout == 300
    try:
        libmu.Defs.debug = True
        assert machine.Debug.enabled
    finally:
        libmu.Defs.debug = False
    assert not machine.Debug.enabled


def test_defs_transfer_strings_as_mu():
    vals = {"bucket": "b", "inkey": "k", "targfile": "f"}
    assert defs.Defs.make_retrievestring("", vals) == (True, "b", "k", "f")
    assert defs.Defs.make_uploadstring("", vals) == (False, "b", None, None)


def test_expected_response_table():
    assert handler.expected_response("seti:x:1") == "OK:SETI"
    assert handler.message_responses["run"] == "OK:R"


def test_rand_str_is_letters_and_digits():
    s = util.rand_str(32)
    assert len(s) == 32 and s.isalnum() and s != util.rand_str(32)


def test_read_pem_and_format_pem_round_trip(tmp_path):
    body = "QUJD" * 40
    path = tmp_path / "c.pem"
    path.write_text(util.format_ssl_cert(body))
    assert util.read_pem(str(path)) == body
    assert util.format_ssl_cert_chain(f"{body} {body}").count("BEGIN CERTIFICATE") == 2
    assert all(len(line) <= 64 for line in util.format_ssl_key(body).splitlines())


def test_rand_green_keeps_the_text():
    assert "".join(c for c in util.rand_green("abc") if c in "abc") == "abc"


def test_fd_wrapper_is_a_socket_face_on_a_pipe():
    r, w = os.pipe()
    reader, writer = FDWrapper(r), FDWrapper(w)
    reader.set_blocking(False)
    assert writer.send(b"hi") == 2 and reader.recv(10) == b"hi"
    assert reader.fileno() == r and reader.getpeername() == (None, None)
    reader.close(), writer.close()
    assert reader.recv(1) is None and reader.fileno() is None
