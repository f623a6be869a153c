"""Reading YUV4MPEG2 and the BT.601 reference conversion, to check what png2y4m produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Y4M:
    width: int
    height: int
    params: dict[str, str]
    frames: list[tuple[Any, Any, Any]]  # (Y, Cb, Cr) uint8 arrays


def parse_y4m(data: bytes) -> Y4M:
    import numpy as np

    header, sep, rest = data.partition(b"\n")
    fields = header.decode("ascii", "replace").split()
    if not sep or not fields or fields[0] != "YUV4MPEG2":
        raise ValueError("not a YUV4MPEG2 stream (bad header)")
    params = {f[0]: f[1:] for f in fields[1:]}
    w, h = int(params["W"]), int(params["H"])
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    frames: list[tuple[Any, Any, Any]] = []
    pos = 0
    view = memoryview(rest)
    while pos < len(rest):
        if bytes(view[pos : pos + 6]) != b"FRAME\n" or pos + 6 + size > len(rest):
            raise ValueError(f"frame {len(frames)} is truncated or lacks its FRAME marker")
        plane = np.frombuffer(rest, dtype=np.uint8, count=size, offset=pos + 6)
        frames.append(
            (
                plane[: w * h].reshape(h, w),
                plane[w * h : w * h + cw * ch].reshape(ch, cw),
                plane[w * h + cw * ch :].reshape(ch, cw),
            )
        )
        pos += 6 + size
    return Y4M(w, h, params, frames)


def bt601_420(rgb: Any) -> tuple[Any, Any, Any]:
    """RGB in [0, 1] (H x W x 3) -> float Y, Cb, Cr planes, chroma averaged over 2x2 blocks."""
    import numpy as np

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 219 * (0.299 * r + 0.587 * g + 0.114 * b)
    cb = 128 + 224 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    cr = 128 + 224 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    h, w = y.shape

    def sub(p: Any) -> Any:
        p = np.pad(p, ((0, h % 2), (0, w % 2)), mode="edge")
        return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))

    return y, sub(cb), sub(cr)


def psnr(got: Any, want: Any) -> float:
    import numpy as np

    mse = float(np.mean((got.astype(np.float64) - want) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))
