"""Jobs ``mu run`` knows by name, and job files it loads by path.

A bundled job is a module offering ``add_arguments(parser)`` and ``make_job(args)``. The same
two functions make any Python file a job (``mu run ./myjob.py``), so users add jobs without
editing this package; a file with a ``main()`` instead is a mu job file, run as mu ran it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType


class JobFileError(Exception):
    """A job file that cannot be loaded; the message says why and what to do."""


def job_modules() -> dict[str, ModuleType]:
    from . import png2y4m, scan

    return {"png2y4m": png2y4m, "scan": scan}


def load_job_file(path: str) -> ModuleType:
    """Import ``path`` as ``python path`` would see it: its folder first on ``sys.path``, so a
    job file's own helper modules next to it import as they did for mu."""
    file = Path(path)
    if not file.is_file():
        raise JobFileError(f"no job file at {path}; give the path of a .py file (e.g. ./png2y4m_server.py)")
    name = "mu_job_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise JobFileError(f"{path} is not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise JobFileError(
            f"{path} is not Python 3 (line {exc.lineno}: {exc.msg}); mu's job files written for "
            "Python 2 (print statements, tabs) need those lines brought to Python 3 first"
        ) from exc
    except ImportError as exc:
        del sys.modules[name]
        hint = " (a mu job file imports coordinator.libmu instead of libmu)" if exc.name == "libmu" else ""
        raise JobFileError(f"{path} cannot be imported: {exc}{hint}") from exc
    if not (hasattr(module, "add_arguments") and hasattr(module, "make_job")) and not callable(
        getattr(module, "main", None)
    ):
        raise JobFileError(
            f"{path} defines neither main() (a mu job file) nor add_arguments() and make_job() "
            "(a job module); see 'Porting a mu job' in the README"
        )
    return module
