"""How a local worker process is started and ended: in a bubblewrap sandbox, or (when asked) bare.

A Lambda worker gets a private ``/tmp``, a read-only ``/var/task`` holding its code and
binaries, and nothing of any other invocation; when the invocation ends, everything it started
ends with it. ``Sandbox`` gives each local worker the same with bubblewrap (``bwrap``):

- its own mount namespace whose root holds only the system directories (``/usr``, ``/etc``,
  the ``/lib*`` and ``/bin`` links), the Python interpreter's prefix, the site-packages folders
  that hold boto3 and its dependencies (at ``/opt/mu/site/N``), the ``lambda_worker`` package
  (at ``/opt/mu/lambda_worker``), all read-only; the bundled binaries read-only at
  ``/var/task``, which is the working directory (``MU_BIN_DIR=/var/task``), and a fresh tmpfs
  ``/tmp``. The checkout, home folders, the host's ``/tmp`` and its secrets under ``/etc``
  (shadow files, SSH host keys, ``/etc/ssl/private``) are not there at all, so the
  layout does not depend on where the checkout lives (a clone under ``/tmp`` works the same);
- its own PID namespace: when the worker exits or is killed, the kernel kills every process
  it started, daemons included; ``--die-with-parent`` does the same if ``mu`` itself dies;
- its own session (``--new-session``), IPC and UTS namespaces, and no capabilities;
- the host's network namespace, so loopback reaches the coordinator and a local S3.

``NoSandbox`` (``--no-sandbox``) runs the worker as a plain process with a scratch ``TMPDIR``
that is removed afterwards; it kills what the worker started by freezing and walking its
process tree in ``/proc``, which misses anything that has already left the tree (a daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Protocol

from coordinator.launch import LaunchError
from lambda_worker.process import CREDENTIAL_VARIABLES

TASK_ROOT = "/var/task"  # the bundled binaries, read-only; the worker's working directory
CODE_ROOT = "/opt/mu"  # lambda_worker, site-packages and any files named by the environment
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Host secrets under the bound /etc, hidden: files by an unreadable node, folders by an empty one.
HIDDEN = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
          "/etc/ssh", "/etc/ssl/private")  # fmt: skip
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Files named by these variables are made visible read-only and the variable points at them.
FILE_VARIABLES = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
# Host paths that mean nothing inside the sandbox.
DROPPED_VARIABLES = (
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "PYTHONUSERBASE",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
KILL_WAIT = 2.0  # seconds for a sandbox to be gone once asked, before the next, harder step

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: 'apt-get install bubblewrap'; 'make test' and 'make demo' "
    "install it when run as root)"
)
NO_SANDBOX_HINT = (
    "or pass --no-sandbox to run local workers without isolation (they then share this "
    "machine's /tmp and files, and a killed worker may leave processes behind)"
)


class SandboxError(LaunchError):
    """No sandbox can be made here; the message says why and what to do."""


class Isolation(Protocol):
    """What the local launcher needs: how to start one worker, how to end it, what to clean."""

    # AWS keys a worker needs that the environment lacks; the launcher hands every key to the
    # worker on stdin, never in an environment (see lambda_worker.__main__).
    credentials: dict[str, str]

    async def start(self, worker: int, env: Mapping[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
        """Start worker ``worker`` in a session of its own, reading its event on stdin and
        writing its output to ``log``."""

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        """End the worker and everything it started; returns once they are gone."""

    async def ended(self, worker: int, proc: asyncio.subprocess.Process) -> None:
        """The worker's process has exited: wait until nothing it started is left, and drop
        what was kept for it."""

    def close(self) -> None:
        """Remove whatever this isolation made on the host."""


# -- bubblewrap --------------------------------------------------------------------------------


def package_dirs(top: str = "boto3") -> list[str]:
    """Folders holding ``top`` and every distribution it requires, in the order found."""
    dirs: list[str] = []
    seen: set[str] = set()
    todo = [top]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        where = os.path.realpath(str(dist.locate_file("")))
        if where not in dirs:
            dirs.append(where)
        for req in dist.requires or []:
            if "extra ==" not in req:  # optional extras are not installed for the worker
                todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return dirs


def host_binaries() -> Path | None:
    """The bundled binaries: ``MU_BIN_DIR`` if set, else ``binaries/bin`` of this checkout."""
    configured = os.environ.get("MU_BIN_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "binaries" / "bin"
    return path if path.is_dir() else None


def file_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """AWS credentials from the shared files or a profile, as the variables Lambda sets.

    The sandbox holds no home folder, so a worker cannot read ``~/.aws``; the launcher hands it
    these instead (on stdin; the worker keeps them out of the commands it runs). Nothing is
    looked up when the environment already has keys.
    """
    if env.get("AWS_ACCESS_KEY_ID"):
        return {}
    files = [
        env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        env.get("AWS_CONFIG_FILE", "~/.aws/config"),
    ]
    if not any(os.path.isfile(os.path.expanduser(f)) for f in files):
        return {}
    import botocore.session

    try:
        creds = botocore.session.Session().get_credentials()
    except Exception:  # a broken profile: the worker reports what S3 says
        return {}
    if creds is None:
        return {}
    frozen = creds.get_frozen_credentials()
    found = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        found["AWS_SESSION_TOKEN"] = frozen.token
    return found


def _under(path: str, parents: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


class Sandbox:
    """One bubblewrap sandbox per worker (see the module docstring for what it holds).

    ``shared`` maps paths inside the sandbox to host folders bound read-write: the one way for
    a worker's commands to leave files on the host (tests use it); nothing is shared by default.
    Constructing a ``Sandbox`` checks that one can really be made here and raises
    ``SandboxError`` with the reason otherwise.
    """

    def __init__(self, shared: Mapping[str, str | os.PathLike[str]] | None = None, bwrap: str | None = None):
        found = bwrap or shutil.which("bwrap")
        if not found:
            raise SandboxError(
                "local workers run in a bubblewrap sandbox, but 'bwrap' is not installed: "
                f"{INSTALL_HINT}, {NO_SANDBOX_HINT}"
            )
        self.bwrap = found
        self.python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
        self.binaries = host_binaries()
        self.site = package_dirs()
        self.shared = {inside: os.path.realpath(host) for inside, host in (shared or {}).items()}
        for inside in self.shared:
            if not inside.startswith("/") or _under(inside, ("/tmp", TASK_ROOT, CODE_ROOT, *SYSTEM_DIRS)):
                raise ValueError(f"shared path {inside!r} must be absolute and outside the sandbox's folders")
        self.credentials = file_credentials(os.environ)
        self._inits: dict[int, tuple[int, int]] = {}  # monitor pid -> (init pid, its start time)
        _check(self)

    def mounts(self) -> list[str]:
        """bwrap arguments that build the sandbox's file system, in mount order."""
        args: list[str] = []
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in HIDDEN:
            if os.path.isdir(path) and not os.path.islink(path):
                args += ["--tmpfs", path, "--remount-ro", path]
            elif os.path.lexists(path):
                args += ["--ro-bind", "/dev/null", path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}:
            if not _under(prefix, SYSTEM_DIRS):
                args += ["--ro-bind", prefix, prefix]  # e.g. a pyenv or /opt interpreter, at its path
        if self.binaries is not None:
            args += ["--ro-bind", str(self.binaries), TASK_ROOT]
        else:
            args += ["--dir", TASK_ROOT]
        worker = Path(__file__).resolve().parents[2] / "lambda_worker"
        args += ["--ro-bind", str(worker), f"{CODE_ROOT}/lambda_worker"]
        for i, site in enumerate(self.site):
            args += ["--ro-bind", site, f"{CODE_ROOT}/site/{i}"]
        for inside, host in self.shared.items():
            args += ["--bind", host, inside]
        return args

    def command(
        self, worker: int, env: Mapping[str, str], info_fd: int | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """bwrap's argv and environment for one worker; bwrap writes the sandbox's init pid to
        ``info_fd`` if given. The environment holds no AWS keys: bwrap's init keeps the
        environment it was started with, and every process in the sandbox could read it from
        /proc/1/environ; the keys reach the worker on stdin (``LocalLauncher``)."""
        inner = {k: v for k, v in env.items() if k not in DROPPED_VARIABLES and k not in CREDENTIAL_VARIABLES}
        args = [self.bwrap, "--unshare-all", "--share-net", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--hostname", f"mu-worker-{worker}", *self.mounts()]  # fmt: skip
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        for name in FILE_VARIABLES:
            path = inner.get(name)
            if path and os.path.isfile(path) and not _under(os.path.realpath(path), SYSTEM_DIRS):
                args += ["--ro-bind", os.path.realpath(path), f"{CODE_ROOT}/env/{name}"]
                inner[name] = f"{CODE_ROOT}/env/{name}"
        pythonpath = [CODE_ROOT] + [f"{CODE_ROOT}/site/{i}" for i in range(len(self.site))]
        inner.update(
            PYTHONPATH=":".join(pythonpath), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
            MU_BIN_DIR=TASK_ROOT, TMPDIR="/tmp", HOME="/tmp", PATH=SANDBOX_PATH,
        )  # fmt: skip
        args += ["--chdir", TASK_ROOT, "--", self.python, "-m", "lambda_worker"]
        return args, inner

    # bwrap runs as a monitor process (the one started here) over the sandbox's init (PID 1
    # inside), which runs the worker. When the init dies the kernel kills every process in the
    # namespace before the init can be reaped; but the monitor may exit as soon as the worker
    # has, a moment before that. So the init itself, known from --info-fd, is what is watched.

    async def start(self, worker: int, env: Mapping[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
        read_end, write_end = os.pipe()
        try:
            argv, inner = self.command(worker, env, info_fd=write_end)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log, env=inner,
                start_new_session=True, pass_fds=(write_end,),
            )  # fmt: skip
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        info = await _read_to_end(read_end)  # bwrap closes it before the worker starts
        with contextlib.suppress(ValueError, KeyError, TypeError):
            init = int(json.loads(info)["child-pid"])
            started = _start_time(init)
            if started is not None:
                self._inits[proc.pid] = (init, started)
        return proc

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        init = self._inits.get(proc.pid)
        if init is not None and _start_time(init[0]) == init[1]:
            _signal(init[0], signal.SIGKILL)
        else:
            _kill(proc)  # no sandbox yet: --die-with-parent covers the rest
        try:
            await asyncio.wait_for(proc.wait(), KILL_WAIT)
        except TimeoutError:
            _kill(proc)
            await proc.wait()
        await self._gone(proc)

    async def ended(self, worker: int, proc: asyncio.subprocess.Process) -> None:
        await self._gone(proc)  # the sandbox's /tmp went with it

    async def _gone(self, proc: asyncio.subprocess.Process) -> None:
        """Until the sandbox's init (so every process in it) has exited."""
        init = self._inits.pop(proc.pid, None)
        if init is None:
            return
        pid, started = init
        for _ in range(2):
            end = asyncio.get_running_loop().time() + KILL_WAIT
            while _start_time(pid) == started and asyncio.get_running_loop().time() < end:
                await asyncio.sleep(0.005)
            if _start_time(pid) != started:
                return
            _signal(pid, signal.SIGKILL)  # an init that outlived its monitor

    def close(self) -> None:
        pass


@functools.cache
def _probe(argv: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str | None:
    """Run the worker's interpreter in a sandbox laid out as a worker's; None or what failed."""
    try:
        proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _check(sandbox: Sandbox) -> None:
    argv, env = sandbox.command(0, os.environ)
    argv = [*argv[: argv.index("-m")], "-c", "import boto3, lambda_worker.handler"]
    problem = _probe(tuple(argv), tuple(sorted(env.items())))
    if problem is None:
        return
    if "namespace" in problem.lower() or "permission" in problem.lower():
        why = (
            "this usually means user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=1; "
            "on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0) or a container forbids them"
        )
    else:
        why = "the worker's Python, lambda_worker or boto3 cannot be reached inside it"
    raise SandboxError(f"cannot make a bubblewrap sandbox for local workers ({problem}): {why}; "
                             f"fix that, {NO_SANDBOX_HINT}")  # fmt: skip


# -- no sandbox --------------------------------------------------------------------------------


class NoSandbox:
    """Workers as plain processes in their own sessions, each with a scratch ``TMPDIR``."""

    def __init__(self) -> None:
        self._scratch: Path | None = None
        self.credentials: dict[str, str] = {}  # a plain process reads ~/.aws itself

    async def start(self, worker: int, env: Mapping[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="mu-workers-"))
        tmp = self._scratch / f"worker-{worker}"
        tmp.mkdir(exist_ok=True)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lambda_worker", stdin=asyncio.subprocess.PIPE, stdout=log,
            stderr=log, env={**env, "TMPDIR": str(tmp)}, start_new_session=True,
        )  # fmt: skip

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        # The worker runs each command in a session of its own, so its process group is not
        # enough. Freeze the tree until it stops changing (a stopped process forks no more),
        # then kill every process in it and every process group it leads.
        frozen: list[int] = []
        for _ in range(20):
            tree = [proc.pid, *_descendants(proc.pid)]
            for pid in tree:
                _signal(pid, signal.SIGSTOP)
            if tree == frozen:
                break
            frozen = tree
        own = os.getpgrp()
        for pid in frozen[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group != own:
                    os.killpg(group, signal.SIGKILL)
            _signal(pid, signal.SIGKILL)
        _kill(proc)
        await proc.wait()

    async def ended(self, worker: int, proc: asyncio.subprocess.Process) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch / f"worker-{worker}", ignore_errors=True)

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


# -- /proc -------------------------------------------------------------------------------------


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL to a process we started, unless it has been reaped (its pid may be reused)."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _start_time(pid: int) -> int | None:
    """When a live process started (clock ticks since boot): tells it apart from a later
    process given the same pid. None once it has exited (a zombie counts as exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


async def _read_to_end(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        return await reader.read()
    finally:
        transport.close()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        kids = [p for p, parent in parent_of.items() if parent in frontier]
        found += kids
        frontier = kids
    return found
