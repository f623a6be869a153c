"""Jobs that ``mu run`` knows by name. Each module offers ``add_arguments`` and ``make_job``."""

from __future__ import annotations

from types import ModuleType


def job_modules() -> dict[str, ModuleType]:
    from . import png2y4m, scan

    return {"png2y4m": png2y4m, "scan": scan}
