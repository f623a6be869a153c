"""Human names of states, for displays and reports.

A state's name for people is mu's ``str_extra()`` (shared decision 1), else the first line of
its class docstring, else its class name. Names are read defensively: jobs written for mu,
for this project, and states of either vintage must all display something sensible.
"""

from __future__ import annotations

import re
from typing import Any

_ACTOR_PREFIX = re.compile(r"^\d+:")
_COUNTER = re.compile(r"\s*\(#\d+\)")  # mu's CommandListState appends its command number
# The core's error states say the error itself in str_extra(); for counting and colouring,
# every worker that ended in one is in the same state.
ERROR_NAMES = {"ErrorState": "error", "TerminatedState": "terminated"}
_CLASS_AND_TEXT = re.compile(r"^([A-Za-z_]\w*)\s+(.+)$", re.S)  # describe(): "ClassName text"


def clean(text: str) -> str:
    """``((retrieving a PNG) (#2))`` -> ``retrieving a PNG``: counters and outer brackets go."""
    text = _COUNTER.sub("", text.strip())
    while len(text) >= 2 and text[0] == "(" and text[-1] == ")" and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _own(cls: type, attr: str) -> bool:
    """True if ``attr`` is defined by a job's class rather than only by the framework's bases."""
    for klass in cls.__mro__:
        if attr in vars(klass):
            return klass is cls or not klass.__module__.startswith(("coordinator.core.", "coordinator.libmu"))
    return False


def human_name(state: Any) -> str:
    """The name people see for a state object (or a state class).

    A state object is named as the core names it (``describe``: mu's ``str_extra()``, or the
    docstring's first line), without its class name and command counter; anything else falls
    back to ``extra``, then the docstring's first line, then the class name.
    """
    from coordinator.core.machine import MachineState, describe

    cls = state if isinstance(state, type) else type(state)
    framework = cls.__module__.startswith(("coordinator.core.", "coordinator.libmu"))
    if cls.__name__ in ERROR_NAMES and framework:
        return ERROR_NAMES[cls.__name__]
    if isinstance(state, MachineState):
        if framework or _own(cls, "extra") or _own(cls, "str_extra") or cls.__doc__:
            return name_from_label(describe(state))
        return cls.__name__  # a job's state that names itself nowhere: not "multi-pass state"
    if framework or _own(cls, "extra"):
        text = clean(str(getattr(cls, "extra", "") or ""))
        if text:
            return text
    doc = (cls.__doc__ or "").strip()
    if doc:
        return doc.splitlines()[0].strip().rstrip(".")
    return cls.__name__


def in_words(state: Any) -> str:
    """A state as an error message names it: its class, for whoever reads the job's code, then
    its human name and, in a command list, which entry it was at, for everyone:
    ``PNG2Y4MUploadState (converting and uploading, step 2 of 3)`` where mu's own ``str()``
    says ``((converting and uploading) (#1))``."""
    from coordinator.core.machine import CommandListState, MultiPassState

    cls = type(state).__name__
    name = human_name(state)
    parts = [name] if name != cls else []
    if isinstance(state, MultiPassState):
        of = f" of {len(state.commands)}" if isinstance(state, CommandListState) else ""
        parts.append(f"step {state.cmdNum + 1}{of}")
    return f"{cls} ({', '.join(parts)})" if parts else cls


def name_from_label(label: str) -> str:
    """A human name from a state's label as the timing log holds it.

    The core's ``describe`` gives ``"ClassName text"``; mu's ``str(state)`` gives ``"3:text"``;
    the text is ``str_extra()`` (``"((retrieving a PNG) (#2))"``) or a docstring line.
    """
    text = label.strip()
    if _ACTOR_PREFIX.match(text):
        text = _ACTOR_PREFIX.sub("", text)
    else:
        match = _CLASS_AND_TEXT.match(text)
        if match and match.group(1) in ERROR_NAMES:
            return ERROR_NAMES[match.group(1)]
        if match:
            text = match.group(2)
    return clean(text) or label.strip()
