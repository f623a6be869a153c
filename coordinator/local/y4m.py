"""Reading YUV4MPEG2 and the reference RGB -> Y'CbCr conversion, to check what png2y4m produced."""

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
    hsub, vsub = chroma_subsampling(params.get("C", "420jpeg"))
    cw, ch = (w + hsub) // (1 + hsub), (h + vsub) // (1 + vsub)
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


def chroma_subsampling(tag: str) -> tuple[int, int]:
    """(horizontal, vertical) halving of the chroma planes for a Y4M ``C`` tag."""
    if tag.startswith("420"):
        return 1, 1
    if tag == "422":
        return 1, 0
    if tag == "444":
        return 0, 0
    raise ValueError(f"unsupported chroma format C{tag}")


# Luma weights of R and B (ITU-R BT.601 and BT.709); G takes the rest.
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def reference_ycbcr(rgb: Any, matrix: str = "bt601", chroma: str = "420jpeg") -> tuple[Any, Any, Any]:
    """RGB in [0, 1] (H x W x 3) -> float limited-range Y, Cb, Cr planes, each chroma sample the
    mean of its block (an odd last row or column averages what it has)."""
    import numpy as np

    kr, kb = MATRICES[matrix]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = kr * r + (1 - kr - kb) * g + kb * b
    y = 16 + 219 * luma
    cb = 128 + 224 * (b - luma) / (2 * (1 - kb))
    cr = 128 + 224 * (r - luma) / (2 * (1 - kr))
    h, w = y.shape
    hsub, vsub = chroma_subsampling(chroma)

    def sub(p: Any) -> Any:
        p = np.pad(p, ((0, h % 2 * vsub), (0, w % 2 * hsub)), mode="edge")
        return p.reshape(p.shape[0] >> vsub, 1 + vsub, p.shape[1] >> hsub, 1 + hsub).mean(axis=(1, 3))

    return y, sub(cb), sub(cr)


def psnr(got: Any, want: Any) -> float:
    import numpy as np

    mse = float(np.mean((got.astype(np.float64) - want) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))
