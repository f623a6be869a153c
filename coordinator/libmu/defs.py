"""mu's ``libmu.defs``: ``Defs``, the settings both ends of mu read.

``Defs.debug`` is the core's debug switch: setting it (``-D``, or a job doing
``Defs.debug = True`` as mu's tests did) makes the state machines print what they handle.
"""

from __future__ import annotations

from typing import Any

from coordinator.core.machine import HEADER_FMT, Debug


class _DefsType(type):
    @property
    def debug(cls) -> bool:
        return Debug.enabled

    @debug.setter
    def debug(cls, value: bool) -> None:
        Debug.enabled = bool(value)


class Defs(metaclass=_DefsType):
    timeout = 300
    header_len = 13
    header_fmt = HEADER_FMT
    # mu's worker-side TLS 1.2 cipher list; kept for reference, the project speaks TLS 1.3 only
    cipher_list = (
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-RC4-SHA:ECDHE-RSA-AES256-SHA:HIGH:!aNULL:!eNULL:"
        "!EXP:!LOW:!MEDIUM:!MD5:!RC4:!DES:!3DES"
    )
    fun = False
    cmdstring = ""

    @staticmethod
    def make_cmdstring(*_: Any) -> str:
        return Defs.cmdstring

    @staticmethod
    def make_retrievestring(_: Any, vals: dict[str, Any]) -> tuple[bool, Any, Any, Any]:
        bucket, key, filename = vals.get("bucket"), vals.get("inkey"), vals.get("targfile")
        return (bucket is not None and key is not None and filename is not None, bucket, key, filename)

    @staticmethod
    def make_uploadstring(_: Any, vals: dict[str, Any]) -> tuple[bool, Any, Any, Any]:
        bucket, key, filename = vals.get("bucket"), vals.get("outkey"), vals.get("fromfile")
        return (bucket is not None and key is not None and filename is not None, bucket, key, filename)
