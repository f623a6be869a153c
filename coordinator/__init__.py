"""The mu coordinator: launches workers and drives each through a state machine over mutual TLS."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_mu(submodule: str = "") -> ModuleType:
    """``import mu`` (mu.map's package, ``coordinator/pymap/``), or one of its modules.

    An install maps the name ``mu`` to that folder (``pyproject.toml``); a checkout used as it
    is (``PYTHONPATH=.``, as in some containers) has no folder of that name, so the package is
    loaded from its folder under its own name, once, exactly as the install would.
    """
    if "mu" not in sys.modules:
        try:
            importlib.import_module("mu")
        except ModuleNotFoundError as exc:
            if exc.name != "mu":
                raise
            folder = Path(__file__).resolve().parent / "pymap"
            spec = importlib.util.spec_from_file_location(
                "mu", folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules["mu"] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules["mu"]
                raise
    return importlib.import_module(f"mu.{submodule}" if submodule else "mu")
