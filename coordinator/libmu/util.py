"""mu's ``libmu.util`` as job files use it: random strings and PEM helpers.

mu's socket helpers (``connect_socket``, ``listen_socket``, ``ssl_context`` ...) are not here:
the coordinator's asyncio server and the worker own every socket, so a job file never needs
them; asking for one says so.
"""

from __future__ import annotations

import random
from typing import Any

from coordinator.core.machine import rand_str

__all__ = [
    "format_pem",
    "format_ssl_cert",
    "format_ssl_cert_chain",
    "format_ssl_key",
    "rand_green",
    "rand_str",
    "read_pem",
]

_SOCKET_HELPERS = {"connect_socket", "listen_socket", "accept_socket", "ssl_context", "sslize"}


def __getattr__(name: str) -> Any:
    if name in _SOCKET_HELPERS:
        raise AttributeError(
            f"coordinator.libmu.util.{name} is mu's socket plumbing, which this project does not "
            "expose: the coordinator's server and the workers own the connections. A job file "
            "needs only its state classes and server.options/server_launch/server_main_loop."
        )
    raise AttributeError(f"module 'coordinator.libmu.util' has no attribute '{name}'")


def format_pem(ctype: str, body: str) -> str:
    """A PEM block around base64 ``body`` (as ``read_pem`` returns it), 64 characters a line."""
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "".join(f"{line}\n" for line in [f"-----BEGIN {ctype}-----", *lines, f"-----END {ctype}-----"])


def format_ssl_cert(body: str) -> str:
    return format_pem("CERTIFICATE", body)


def format_ssl_key(body: str) -> str:
    return format_pem("RSA PRIVATE KEY", body)


def format_ssl_cert_chain(chain: str) -> str:
    """mu passed a chain as base64 bodies separated by spaces."""
    return "".join(format_ssl_cert(cert) for cert in chain.split(" "))


def read_pem(fname: str) -> str:
    """The base64 body of the first PEM block in ``fname``, joined on one line (mu's format)."""
    body: list[str] = []
    inside = False
    with open(fname) as f:
        for line in f:
            if line.startswith("-----BEGIN "):
                inside = True
            elif line.startswith("-----END "):
                break
            elif inside:
                body.append(line.rstrip())
    return "".join(body)


_GREENS = (2, 10, 22, 28, 29, 34, 35, 40, 41, 46, 47, 48, 70, 71, 76, 77, 82, 83, 112, 118, 148, 154)


def rand_green(string: str) -> str:
    """``string`` in randomly chosen greens, some bold, a few blinking (mu's ``Defs.fun``)."""
    out = []
    for char in string:
        attrs = ["1"] if random.randint(0, 3) else []
        if not random.randint(0, 39):
            attrs.append("5")
        out.append(f"\033[{';'.join([*attrs, f'38;5;{random.choice(_GREENS)}'])}m{char}\033[25m")
    return "".join(out) + "\033[0m"
