"""Running ``run:`` commands: where, with which environment, and how they are stopped.

Each command is a shell in its own session (process group), started in the folder that holds
the bundled binaries, so ``./png2y4m`` resolves as it did in mu's ``/var/task``. Its output is
streamed into a bounded tail, so a command that prints a gigabyte costs no more memory than
one that prints a line. Stopping the worker kills every process group it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from .commands import CommandError, OutputTail

READ_SIZE = 64 * 1024
CHECKOUT_BINARIES = Path(__file__).resolve().parent.parent / "binaries" / "bin"

# AWS_* variables a command may see; every other one (credentials, the container credential
# endpoint, the Lambda runtime API, profiles) stays in the worker: S3 transfers happen there.
AWS_NOT_SECRET = frozenset({
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
})  # fmt: skip


# The variables that hold AWS keys. A local launcher hands them to ``python -m lambda_worker`` on
# stdin (see ``__main__``), so that no process's starting environment (/proc/PID/environ) has them.
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
)  # fmt: skip
PR_SET_DUMPABLE = 4  # prctl(2)


def protect_memory() -> str | None:
    """Make this process undumpable: its ``/proc/PID/environ``, ``mem``, ``fd`` ... become
    unreadable to processes of the same user without CAP_SYS_PTRACE, so a ``run:`` command
    cannot read the AWS keys that the worker's starting environment (Lambda's runtime
    process) and its memory hold. Commands start dumpable again (execve resets the flag).
    Returns None, or why it could not be done (not Linux)."""
    if not sys.platform.startswith("linux"):
        return f"prctl(PR_SET_DUMPABLE) is Linux only, and this is {sys.platform}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return f"prctl is not available: {exc}"
    return None


def bin_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """The bundled binaries: ``MU_BIN_DIR``, else ``$LAMBDA_TASK_ROOT/bin``, else the checkout's."""
    root = environ.get("LAMBDA_TASK_ROOT")
    lambda_bin = os.path.join(root, "bin") if root else None
    for candidate in (environ.get("MU_BIN_DIR"), lambda_bin, str(CHECKOUT_BINARIES)):
        if candidate and os.path.isdir(candidate):
            return candidate
    return None


def command_env(environ: Mapping[str, str], tmpdir: str, binaries: str | None) -> dict[str, str]:
    """The worker's environment without AWS credentials, the binaries first on PATH, TMPDIR set."""
    env = {k: v for k, v in environ.items() if not k.startswith("AWS_") or k in AWS_NOT_SECRET}
    path = env.get("PATH", "/usr/bin:/bin")
    env["PATH"] = os.pathsep.join([binaries, path]) if binaries else path
    env["TMPDIR"] = tmpdir
    return env


class ProcessGroups:
    """The process groups this worker started; :meth:`kill_all` ends every one still alive."""

    def __init__(self) -> None:
        self._groups: set[int] = set()

    def __len__(self) -> int:
        return len(self._groups)

    async def run(self, cmd: str, cwd: str, env: dict[str, str], tail: OutputTail) -> int:
        """Run ``cmd`` in a shell; returns its exit status (negative: killed by that signal).

        Cancelling the call kills the command's whole process group at once.
        """
        self._prune()
        try:
            proc = await asyncio.create_subprocess_shell(
                cmd, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise CommandError(f"run: cannot start a shell in {cwd}: {exc}; command: {cmd[:300]}") from exc
        self._groups.add(proc.pid)
        try:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(READ_SIZE):
                tail.feed(chunk)
            return await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: the worker is stopping or the time is up
                self._kill(proc.pid)
                with contextlib.suppress(Exception):  # reap it, so nothing outlives the event loop
                    await asyncio.wait_for(proc.wait(), 5)
            self._prune()

    def kill_all(self) -> None:
        for pgid in list(self._groups):
            self._kill(pgid)
        self._groups.clear()

    def _kill(self, pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def _prune(self) -> None:
        """Forget groups with no process left, so their ids are never signalled after reuse."""
        for pgid in list(self._groups):
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                self._groups.discard(pgid)
