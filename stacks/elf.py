"""Is this file a static Linux program for the worker's CPU? Read from its ELF headers in pure Python.

Lambda's runtime promises none of the build machine's shared libraries, and a program built for
another CPU fails there with exit 126 ("exec format error") only once a job runs. So synth
checks every bundled binary first, without ``readelf`` (absent on macOS, where people deploy
from). Standard library only: ``binaries/Makefile`` runs this file as a script too
(``python3 stacks/elf.py --arch x86_64 FILE...``).
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

# e_machine values (System V ABI, "Machine" field) for the CPUs Lambda offers.
MACHINES = {62: "x86_64", 183: "arm64"}
KNOWN_MACHINES = {3: "x86 (32-bit)", 40: "ARM (32-bit)", 243: "RISC-V", 21: "PowerPC 64", 22: "s390x"}
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5
ET_EXEC, ET_DYN = 2, 3
MACH_O_MAGICS = (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


class NotElfError(ValueError):
    """The file is not an ELF executable we can read."""


@dataclass(frozen=True)
class ElfInfo:
    machine: str  # "x86_64", "arm64", or a description of another CPU
    bits: int
    interpreter: str | None  # the dynamic loader a dynamically linked program names
    needed: tuple[str, ...]  # shared libraries it names (DT_NEEDED)

    @property
    def static(self) -> bool:
        return self.interpreter is None and not self.needed


def read(path: Path) -> ElfInfo:
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        if data[:4] in MACH_O_MAGICS:
            raise NotElfError("is a macOS (Mach-O) program, not a Linux one")
        if data[:2] == b"#!":
            raise NotElfError("is a script, not a compiled program")
        raise NotElfError(f"is not an ELF executable (it starts with {data[:4]!r})")
    if len(data) < 52 or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise NotElfError("has a truncated or malformed ELF header")
    bits = 64 if data[4] == 2 else 32
    end = "<" if data[5] == 1 else ">"
    e_type, e_machine = struct.unpack_from(end + "HH", data, 16)
    if e_type not in (ET_EXEC, ET_DYN):
        raise NotElfError("is an ELF object or core file, not an executable")
    if bits == 64:
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
        phdr, dyn = end + "II6Q", end + "qQ"
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
        phdr, dyn = end + "8I", end + "iI"
    if phoff + phentsize * phnum > len(data) or phentsize < struct.calcsize(phdr):
        raise NotElfError("has program headers past the end of the file")
    segments = [_segment(struct.unpack_from(phdr, data, phoff + i * phentsize), bits) for i in range(phnum)]
    interpreter = next(
        (data[s.offset : s.offset + s.size].split(b"\0")[0].decode(errors="replace")
         for s in segments if s.type == PT_INTERP),
        None,
    )  # fmt: skip
    needed = tuple(name for s in segments if s.type == PT_DYNAMIC for name in _needed(data, s, segments, dyn))
    machine = MACHINES.get(e_machine) or KNOWN_MACHINES.get(e_machine) or f"machine {e_machine}"
    return ElfInfo(machine, bits, interpreter, needed)


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    size: int  # bytes in the file


def _segment(fields: tuple[int, ...], bits: int) -> _Segment:
    # 64-bit: type, flags, offset, vaddr, paddr, filesz, ...; 32-bit: type, offset, vaddr, paddr, filesz, ...
    if bits == 64:
        return _Segment(fields[0], fields[2], fields[3], fields[5])
    return _Segment(fields[0], fields[1], fields[2], fields[4])


def _needed(data: bytes, dynamic: _Segment, segments: list[_Segment], fmt: str) -> list[str]:
    """The DT_NEEDED names: offsets into the string table DT_STRTAB points at (a load address)."""
    step = struct.calcsize(fmt)
    entries = []
    for at in range(dynamic.offset, min(dynamic.offset + dynamic.size, len(data)) - step + 1, step):
        tag, value = struct.unpack_from(fmt, data, at)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    base = None
    for s in segments:
        if s.type == PT_LOAD and strtab is not None and s.vaddr <= strtab < s.vaddr + s.size:
            base = s.offset + strtab - s.vaddr
    names = []
    for tag, value in entries:
        if tag == DT_NEEDED:
            start = None if base is None else base + value
            raw = data[start : data.find(b"\0", start)] if start is not None and start < len(data) else b""
            names.append(raw.decode(errors="replace") or "a shared library")
    return names


def problem(path: Path, arch: str) -> str | None:
    """Why ``path`` cannot run on a Lambda of ``arch``, or None if it can."""
    try:
        info = read(path)
    except NotElfError as exc:
        return f"{Path(path).name} {exc}"
    except OSError as exc:
        return f"{Path(path).name} cannot be read: {exc.strerror}"
    if info.machine != arch or info.bits != 64:
        return (
            f"{Path(path).name} is built for {info.machine} ({info.bits}-bit), but the workers run on {arch}"
        )
    if not info.static:
        needs = ", ".join([*([f"the loader {info.interpreter}"] if info.interpreter else []), *info.needed])
        return f"{Path(path).name} is dynamically linked (it needs {needs}); Lambda needs static binaries"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check that programs are static Linux ELF for one CPU.")
    p.add_argument("--arch", choices=sorted(MACHINES.values()), default="x86_64")
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    bad = 0
    for path in args.files:
        why = problem(path, args.arch)
        print(f"binaries: {why}" if why else f"binaries: {path} is a static {args.arch} program",
              file=sys.stderr if why else sys.stdout)  # fmt: skip
        bad += why is not None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
