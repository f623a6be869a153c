"""mu's ``libmu.machine_state``: the state classes, which live in the core."""

from coordinator.core.machine import (
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
    TerminatedState,
)

__all__ = [
    "CommandListState",
    "ErrorState",
    "ForLoopState",
    "IfElseState",
    "InfoWatcherState",
    "MachineState",
    "MultiPassState",
    "OnePassState",
    "SuperpositionState",
    "TerminalState",
    "TerminatedState",
]
