"""The worker's file operations on its temporary directory: peer files and mu's state hand-off.

Files from a peer appear atomically (written under a temporary name, then renamed), because a
command may be polling for them (mu's ``##INSTATEWAIT##``); a half-written state file would be
read as a corrupt one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zlib

from .commands import Handoff, check_frame, state_message_head

INFLATE_CHUNK = 1 << 20


class FileError(Exception):
    """A file operation that could not be done; the text says which file and why."""


def ensure_dir(path: str) -> None:
    """mu jobs begin with ``run:rm -rf /tmp/*``: the temporary directory comes back when needed."""
    os.makedirs(path, exist_ok=True)


def _atomic(tmpdir: str, name: str, write: object) -> str:
    ensure_dir(tmpdir)
    target = os.path.join(tmpdir, name)
    fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=tmpdir)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)  # type: ignore[operator]
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    return target


def write_peer_file(tmpdir: str, name: str, payload: bytes) -> str:
    try:
        return _atomic(tmpdir, name, lambda f: f.write(payload))
    except OSError as exc:
        raise FileError(f"cannot store peer file {name}: {exc.strerror or exc}") from exc


def inflate_state(tmpdir: str, number: int, compressed: bytes, limit: int) -> str:
    """mu's get_input_state: zlib data -> ``##TMPDIR##/n.state``, at most ``limit`` bytes inflated."""

    def write(f: object) -> None:
        inflater = zlib.decompressobj()
        total, data = 0, compressed
        while not inflater.eof:
            chunk = inflater.decompress(data, INFLATE_CHUNK)
            data = inflater.unconsumed_tail
            if not chunk and not data:
                break  # the input is used up
            total += len(chunk)
            if total > limit:
                raise FileError(f"STATE({number}) inflates to more than {limit} bytes")
            f.write(chunk)  # type: ignore[attr-defined]
        if not inflater.eof:
            raise FileError(f"STATE({number}) holds truncated zlib data")

    try:
        return _atomic(tmpdir, f"{number}.state", write)
    except zlib.error as exc:
        raise FileError(f"STATE({number}) is not zlib data: {exc}") from exc
    except OSError as exc:
        raise FileError(f"cannot store {number}.state: {exc.strerror or exc}") from exc


def read_for_peer(path: str, head: bytes, max_frame: int, what: str) -> bytes:
    """``head`` + the file, refused before reading when it cannot fit one relay message."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise FileError(f"{what}: {path} does not exist") from exc
    check_frame(len(head) + size, max_frame, f"{what}: {path}")
    with open(path, "rb") as f:
        return head + f.read()


def hand_off(tmpdir: str, plan: Handoff, max_frame: int) -> tuple[bytes | None, list[str]]:
    """mu's finished_run on disk: drop ``(run_iter-2).state``, copy ``output.ivf`` to ``prev.ivf``,
    and build the ``STATE(run_iter):`` + zlib message for the peer. Returns it (or None) and the
    problems met on the way, which the session reports instead of dying as mu's worker did."""
    problems: list[str] = []
    if plan.unlink:
        with contextlib.suppress(FileNotFoundError):  # mu: absent after a "flying goose" pass
            os.unlink(os.path.join(tmpdir, plan.unlink))
    try:
        shutil.copyfile(os.path.join(tmpdir, "output.ivf"), os.path.join(tmpdir, "prev.ivf"))
    except OSError as exc:
        problems.append(f"cannot copy output.ivf to prev.ivf: {exc.strerror or exc}")
    if plan.send is None:
        return None, problems
    path = os.path.join(tmpdir, "final.state")
    try:
        with open(path, "rb") as f:
            message = state_message_head(plan.send) + zlib.compress(f.read())
        check_frame(len(message), max_frame, f"STATE({plan.send}) from {path}")
    except OSError as exc:
        problems.append(f"cannot send STATE({plan.send}): {path}: {exc.strerror or exc}")
        return None, problems
    except Exception as exc:  # CommandError from check_frame
        problems.append(str(exc))
        return None, problems
    return message, problems
