"""png2y4m against an independent conversion: Pillow decodes, numpy applies BT.601."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def write_png(path: Path, pixels: np.ndarray) -> None:
    """A plain PNG writer, so 16-bit colour inputs (which Pillow cannot write) can be tested."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    raw = pixels.astype(">u2" if depth == 16 else "u1").reshape(h, -1).tobytes()
    stride = len(raw) // h
    rows = b"".join(b"\x00" + raw[i * stride : (i + 1) * stride] for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, COLOR_TYPES[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def decode_rgb(path: Path) -> np.ndarray:
    """Pillow's reading of a PNG as RGB in [0, 1] (16-bit gray keeps its precision)."""
    img = Image.open(path)
    if img.mode in ("I;16", "I;16B", "I"):
        gray = np.asarray(img, dtype=np.float64) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def bt601_420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 219 * (0.299 * r + 0.587 * g + 0.114 * b)
    cb = 128 + 224 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    cr = 128 + 224 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    h, w = y.shape

    def sub(p: np.ndarray) -> np.ndarray:
        p = np.pad(p, ((0, h % 2), (0, w % 2)), mode="edge")
        return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))

    return y, sub(cb), sub(cr)


def read_y4m(path: Path) -> tuple[dict[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    data = path.read_bytes()
    header, _, rest = data.partition(b"\n")
    fields = header.decode().split()
    assert fields[0] == "YUV4MPEG2"
    params = {f[0]: f[1:] for f in fields[1:]}
    w, h = int(params["W"]), int(params["H"])
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    frames = []
    while rest:
        assert rest.startswith(b"FRAME\n")
        plane = np.frombuffer(rest[6 : 6 + size], dtype=np.uint8)
        frames.append((plane[: w * h].reshape(h, w), plane[w * h : w * h + cw * ch].reshape(ch, cw),
                       plane[w * h + cw * ch :].reshape(ch, cw)))  # fmt: skip
        rest = rest[6 + size :]
    return params, frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pattern(h: int, w: int, channels: int, depth: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: exercises every value range without being trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    top = 65535 if depth == 16 else 255
    planes = [
        ((np.sin(xx / (7 + c) + yy / 11 + seed) + 1) / 2 * 0.8 + rng.random((h, w)) * 0.2)
        for c in range(channels)
    ]
    arr = np.clip(np.stack(planes, axis=-1) * top, 0, top).astype(np.uint16 if depth == 16 else np.uint8)
    return arr[..., 0] if channels == 1 else arr


def write_input(path: Path, arr: np.ndarray, depth: int, channels: int) -> None:
    if depth == 8:
        Image.fromarray(arr, {1: "L", 3: "RGB", 4: "RGBA"}[channels]).save(path)
    elif channels == 1:
        Image.fromarray(arr.astype(np.uint16)).save(path)
    else:
        write_png(path, arr)


def reference_rgb(path: Path, arr: np.ndarray, depth: int, channels: int) -> np.ndarray:
    if depth == 16 and channels > 1:  # Pillow reads 16-bit colour as 8-bit; use the source values
        rgb = arr[..., :3].astype(np.float64) / 65535.0
        return rgb
    return decode_rgb(path)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize(("channels", "kind"), [(1, "gray"), (3, "rgb"), (4, "rgba")])
def test_matches_independent_bt601(png2y4m, tmp_path, depth, channels, kind):
    h, w = 37, 50  # odd height: the last chroma row averages one pixel row
    inputs, refs = [], []
    for i in range(3):
        arr = pattern(h, w, channels, depth, seed=i)
        path = tmp_path / f"{i:08d}.png"
        write_input(path, arr, depth, channels)
        inputs.append(str(path))
        refs.append(bt601_420(reference_rgb(path, arr, depth, channels)))
    out = tmp_path / "out.y4m"
    subprocess.run([str(png2y4m), "-o", str(out), "-r", "30:1", *inputs], check=True)
    params, frames = read_y4m(out)
    assert (params["W"], params["H"], params["F"], params["C"]) == ("50", "37", "30:1", "420jpeg")
    assert len(frames) == 3
    for got, want in zip(frames, refs, strict=True):
        for plane_got, plane_want in zip(got, want, strict=True):
            assert plane_got.shape == plane_want.shape
            assert psnr(plane_got, plane_want) >= 40.0, f"{kind} {depth}-bit"


def test_mismatched_sizes_leave_no_output(png2y4m, tmp_path):
    write_input(tmp_path / "a.png", pattern(8, 8, 3, 8, 0), 8, 3)
    write_input(tmp_path / "b.png", pattern(8, 10, 3, 8, 0), 8, 3)
    out = tmp_path / "out.y4m"
    proc = subprocess.run([str(png2y4m), "-o", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert "b.png is 10x8 but the first input is 8x8" in proc.stderr
    assert not any(p.name.startswith("out.y4m") for p in tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"not a png at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDRtruncated"])
def test_bad_input_is_a_clear_error(png2y4m, tmp_path, content):
    write_input(tmp_path / "good.png", pattern(4, 4, 1, 8, 0), 8, 1)
    (tmp_path / "bad.png").write_bytes(content)
    out = tmp_path / "out.y4m"
    args = [str(png2y4m), "-o", str(out), str(tmp_path / "good.png"), str(tmp_path / "bad.png")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.png" in proc.stderr
    assert not any(p.name.startswith("out.y4m") for p in tmp_path.iterdir())


def test_usage_errors(png2y4m, tmp_path):
    assert subprocess.run([str(png2y4m)], capture_output=True).returncode == 2
    proc = subprocess.run(
        [str(png2y4m), "-o", str(tmp_path / "o"), "-r", "0:1", "x.png"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "frame rate" in proc.stderr
    missing = subprocess.run(
        [str(png2y4m), "-o", str(tmp_path / "o"), "nope.png"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "cannot open nope.png" in missing.stderr
