"""How a function travels to the workers: by value or by reference, with its project's sources.

cloudpickle only promises that what it pickles loads in the *same* Python: across minor
versions a function's bytecode is meaningless (``unknown opcode``, a crash). So:

- Same minor version at both ends: cloudpickle, which sends lambdas, closures and functions
  of ``__main__`` by value and everything importable by reference.
- Another version: only a function importable from a module (``module.qualname``) can go, by
  reference, with plain pickle; a lambda, a closure or a function of ``__main__`` is refused
  here, before anything is launched, naming both versions.

Either way the function's package (a zip, named by its SHA-256) holds the pickle and the
source of the project modules loaded here, the modules of the function's own package folder
included, so that the worker imports them as this process did. "Project modules" are those
outside the standard library, the environment's installed packages and mu itself. Packages
from PyPI come from the workers' own environment instead (locally the environment running
mu; on Lambda a layer built from ``-c requirements=FILE``).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import site
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from .errors import VersionMismatchError

PICKLE_PROTOCOL = 5  # read by every Python mu supports at either end (3.8 and later)
MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_PACKAGE_FILES = 2000  # .py files taken from the function's own package folder
MU_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding mu
MU_OWN = tuple(str(MU_ROOT / name) for name in ("coordinator", "lambda_worker", "stacks"))
# A function's module may say ``import mu``: these ship as package ``mu`` (stdlib only).
MU_LIGHT = ("__init__.py", "errors.py")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same function always hashes the same


def version_text(info: Any = sys.version_info) -> str:
    return f"{info[0]}.{info[1]}"


def minor(version: str) -> tuple[int, int]:
    """``"3.12.1"`` or ``"3.12"`` or ``"python3.12"`` -> ``(3, 12)``."""
    text = version.removeprefix("python")
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"a Python version looks like 3.12, got {version!r}") from None


@dataclass(frozen=True)
class Prepared:
    """A function ready to send: its package, how it was pickled, and how its calls pickle."""

    hash: str
    mode: str  # "cloudpickle" or "pickle"
    package: bytes
    name: str
    sources: tuple[str, ...]

    def dumps(self, value: Any) -> bytes:
        if self.mode == "cloudpickle":
            return bytes(cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL))
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)


def describe(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def by_reference_problem(fn: Any) -> str | None:
    """Why ``fn`` cannot travel by reference (module and name), or None if it can."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module is None or qualname is None:  # a callable object: its class goes by reference
        module, qualname = type(fn).__module__, type(fn).__qualname__
    if module == "__main__":
        return "it is defined in __main__ (the script being run)"
    if "<lambda>" in qualname:
        return "it is a lambda"
    if "<locals>" in qualname:
        return "it is defined inside another function (a closure)"
    try:
        pickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        return f"it does not pickle by reference ({exc})"
    return None


def prepare(fn: Any, worker_python: str) -> Prepared:
    """The function's package for workers running ``worker_python``; VersionMismatchError if it
    cannot go to them."""
    if not callable(fn):
        raise TypeError(f"mu.map needs a function, got {type(fn).__name__} {fn!r:.60}")
    here, there = sys.version_info[:2], minor(worker_python)
    name = describe(fn)
    if here == there:
        mode, blob = "cloudpickle", bytes(cloudpickle.dumps(fn, protocol=PICKLE_PROTOCOL))
    else:
        problem = by_reference_problem(fn)
        if problem is not None:
            raise VersionMismatchError(
                f"cannot send {name} to the workers: they run Python {there[0]}.{there[1]} and this is "
                f"Python {here[0]}.{here[1]}, and {problem}. Between different Python versions only a "
                "function importable from a module can go (by reference, with its module's source); move "
                "it into a module and import it from there, or run the workers on this Python "
                f"(make deploy CDK_ARGS='-c python={here[0]}.{here[1]}')"
            )
        mode, blob = "pickle", pickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    sources = project_sources(fn)
    package = _zip({"function.pkl": blob, **{f"src/{arc}": data for arc, data in sources.items()}})
    digest = hashlib.sha256(package).hexdigest()[:32]
    return Prepared(digest, mode, package, name, tuple(sorted(sources)))


# -- which modules ship -------------------------------------------------------------------------


def _not_project() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *MU_OWN}
    paths.update(
        v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return tuple(os.path.realpath(p) for p in paths if p)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def is_project_file(path: str, outside: tuple[str, ...] | None = None) -> bool:
    parts = Path(path).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not _under(path, outside if outside is not None else _not_project())


def _import_root(path: str, module: str, is_package: bool) -> str:
    root = path
    for _ in range(module.count(".") + 1 + (1 if is_package else 0)):
        root = os.path.dirname(root)
    return root


def project_sources(fn: Any) -> dict[str, bytes]:
    """Archive name (relative to an import root) -> source, for every project module loaded
    here and every module of the function's own package folder; plus mu's light modules."""
    outside = _not_project()
    files: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (
            name == "__main__"
            or name == "mu"
            or name.startswith("mu.")
            or not path
            or not path.endswith(".py")
        ):
            continue
        real = os.path.realpath(path)
        if not is_project_file(real, outside):
            continue
        root = _import_root(real, name, hasattr(module, "__path__"))
        files.setdefault(os.path.relpath(real, root), real)
    _own_package(fn, files, outside)
    light = Path(__file__).resolve().parent
    for filename in MU_LIGHT:
        files.setdefault(f"mu/{filename}", str(light / filename))
    out: dict[str, bytes] = {}
    total = 0
    for arc, real in sorted(files.items()):
        data = Path(real).read_bytes()
        total += len(data)
        if total > MAX_SOURCE_BYTES:
            raise ValueError(
                f"the project modules to send with the function pass {MAX_SOURCE_BYTES >> 20} MiB "
                f"(at {real}); keep data out of .py files, or move large modules into a package "
                "installed on the workers"
            )
        out[arc] = data
    return out


def _own_package(fn: Any, files: dict[str, str], outside: tuple[str, ...]) -> None:
    """Modules of the folder of the function's package, loaded or not (a function may import
    a sibling module only when called)."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    name = getattr(module, "__name__", "")
    if not path or name == "__main__" or "." not in name:
        return
    real = os.path.realpath(path)
    if not is_project_file(real, outside):
        return
    folder = os.path.dirname(real)
    root = _import_root(real, name, hasattr(module, "__path__"))
    found = 0
    for here, dirs, names in os.walk(folder):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d != "__pycache__"
            and os.path.isfile(os.path.join(here, d, "__init__.py"))
        )
        for filename in sorted(names):
            if filename.endswith(".py"):
                found += 1
                if found > MAX_PACKAGE_FILES:
                    return
                full = os.path.join(here, filename)
                files.setdefault(os.path.relpath(full, root), full)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buf.getvalue()


def call_arguments(item: Any, star: bool = True) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A map item as arguments: a tuple is positional, a dict is keywords, anything else is
    the one argument."""
    if star and isinstance(item, tuple):
        return item, {}
    if star and isinstance(item, dict):
        return (), item
    return (item,), {}


def pickle_arguments(prepared: Prepared, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> bytes:
    try:
        return prepared.dumps((args, kwargs))
    except Exception as exc:
        hint = (
            (" (between different Python versions arguments go by plain pickle: no lambdas or local classes)")
            if prepared.mode == "pickle"
            else ""
        )
        raise TypeError(f"{what} of {prepared.name} cannot be sent to a worker: {exc}{hint}") from exc
