"""Real binaries the stacks must refuse: one for another CPU, one dynamically linked."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

EM_AARCH64 = 183
BASE = 0x400000


def aarch64_exit0(path: Path) -> None:
    """A complete static AArch64 Linux program that calls exit(0): ELF header, one PT_LOAD
    segment, three instructions. What ``aarch64-linux-gnu-gcc -static -nostdlib`` would make of
    ``_start: exit(0)``, written out by hand so no cross compiler is needed."""
    code = struct.pack(
        "<3I",
        0xD2800000,  # mov x0, #0       (status)
        0xD2800BA8,  # mov x8, #93      (__NR_exit)
        0xD4000001,  # svc #0
    )
    ehsize, phentsize = 64, 56
    size = ehsize + phentsize + len(code)
    header = struct.pack(
        "<4s5B7xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit, little-endian, version 1, System V ABI
        2, EM_AARCH64, 1,  # ET_EXEC, machine, version
        BASE + ehsize + phentsize, ehsize, 0,  # entry, program headers at 64, no section headers
        0, ehsize, phentsize, 1, 64, 0, 0,
    )  # fmt: skip
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x10000)  # PT_LOAD, R+X
    path.write_bytes(header + load + code)
    path.chmod(0o755)


def dynamic_hello(path: Path) -> None:
    """``hello`` built with the system C compiler without -static: it needs ld-linux and libc."""
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed (the static tools in binaries/ need one too)"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "hello.c"
        source.write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
        subprocess.run([cc, "-O2", "-o", str(path), str(source)], check=True)
