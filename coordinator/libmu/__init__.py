"""mu's ``libmu`` for mu's own job files: change ``libmu`` to ``coordinator.libmu`` in a job
file's imports and it runs here, with ``python JOB.py`` or ``mu run ./JOB.py``.

The state classes are the core's (``coordinator.core.machine``), which has mu's semantics;
``server``, ``util``, ``defs`` and ``handler`` adapt mu's module APIs onto the core. As with
mu's ``import libmu``, importing the package makes every submodule an attribute of it
(``coordinator.libmu.util.rand_str`` works after ``import coordinator.libmu``).
"""

from coordinator.libmu import handler as handler  # mu job files reach these as attributes
from coordinator.libmu import server as server
from coordinator.libmu import util as util
from coordinator.libmu.defs import Defs
from coordinator.libmu.fd_wrapper import FDWrapper
from coordinator.libmu.machine_state import (
    CommandListState,
    ErrorState,
    ForLoopState,
    IfElseState,
    InfoWatcherState,
    MachineState,
    MultiPassState,
    OnePassState,
    SuperpositionState,
    TerminalState,
)
from coordinator.libmu.socket_nb import SocketNB

__all__ = [
    "CommandListState",
    "Defs",
    "ErrorState",
    "FDWrapper",
    "ForLoopState",
    "IfElseState",
    "InfoWatcherState",
    "MachineState",
    "MultiPassState",
    "OnePassState",
    "SocketNB",
    "SuperpositionState",
    "TerminalState",
]
