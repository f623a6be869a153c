"""png2y4m against an independent conversion (Pillow or numpy decodes, numpy converts), and its
daala-compatible command line: printf patterns, -f/-F/-s/-S, and mu's ``-i -d`` per-frame use."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from coordinator.local.demo import encode_png
from coordinator.local.y4m import Y4M, parse_y4m, psnr, reference_ycbcr

MIN_PSNR = 40.0


def decode_rgb(path: Path) -> np.ndarray:
    """Pillow's reading of a PNG as RGB in [0, 1] (16-bit gray keeps its precision)."""
    img = Image.open(path)
    if img.mode in ("I;16", "I;16B", "I"):
        gray = np.asarray(img, dtype=np.float64) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


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
        path.write_bytes(encode_png(arr))  # Pillow cannot write 16-bit colour


def reference_rgb(path: Path, arr: np.ndarray, depth: int, channels: int) -> np.ndarray:
    if depth == 16 and channels > 1:  # Pillow reads 16-bit colour as 8-bit; use the source values
        return arr[..., :3].astype(np.float64) / 65535.0
    return decode_rgb(path)


def frame(path: Path, seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    """Write a distinct 8-bit RGB frame; return the RGB it holds, for the reference."""
    arr = pattern(h, w, 3, 8, seed)
    path.write_bytes(encode_png(arr))
    return arr.astype(np.float64) / 255.0


def run(png2y4m: Path, *args: str, text: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(png2y4m), *args], capture_output=True, text=text, **kw)


def read(path: Path) -> Y4M:
    return parse_y4m(path.read_bytes())


def assert_frames(y4m: Y4M, rgbs: list[np.ndarray], matrix: str = "bt601") -> None:
    """Each output frame is the conversion of the matching input, in that order."""
    chroma = y4m.params.get("C", "420jpeg")
    assert len(y4m.frames) == len(rgbs)
    for k, (got, rgb) in enumerate(zip(y4m.frames, rgbs, strict=True)):
        want = reference_ycbcr(rgb, matrix, chroma)
        for name, g, w in zip(("Y", "Cb", "Cr"), got, want, strict=True):
            assert g.shape == w.shape, (k, name)
            assert psnr(g, w) >= MIN_PSNR, f"frame {k} {name}"


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("out.y4m"))


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize(("channels", "kind"), [(1, "gray"), (3, "rgb"), (4, "rgba")])
def test_matches_independent_bt601(png2y4m, tmp_path, depth, channels, kind):
    h, w = 37, 50  # odd height: the last chroma row averages one pixel row
    inputs, rgbs = [], []
    for i in range(3):
        arr = pattern(h, w, channels, depth, seed=i)
        path = tmp_path / f"{i:08d}.png"
        write_input(path, arr, depth, channels)
        inputs.append(str(path))
        rgbs.append(reference_rgb(path, arr, depth, channels))
    out = tmp_path / "out.y4m"
    assert run(png2y4m, "-o", str(out), "-r", "30:1", *inputs).returncode == 0
    y4m = read(out)
    header = (y4m.params["W"], y4m.params["H"], y4m.params["F"], y4m.params["C"])
    assert header == ("50", "37", "30:1", "420jpeg")
    assert_frames(y4m, rgbs)


@pytest.mark.parametrize(
    ("options", "chroma", "matrix"),
    [
        (["--chroma-422"], "422", "bt601"),
        (["--chroma-444"], "444", "bt601"),
        (["--rec709"], "420jpeg", "bt709"),
        (["--rec709", "--chroma-444", "--no-dither"], "444", "bt709"),
        (["--rec709", "--rec601"], "420jpeg", "bt601"),  # the last matrix given counts
    ],
)
def test_chroma_and_matrix_options(png2y4m, tmp_path, options, chroma, matrix):
    rgbs = [frame(tmp_path / f"{i}.png", i, h=9, w=13) for i in range(2)]  # odd both ways
    out = tmp_path / "out.y4m"
    inputs = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    assert run(png2y4m, *options, "-o", str(out), *inputs).returncode == 0
    y4m = read(out)
    assert y4m.params["C"] == chroma
    assert_frames(y4m, rgbs, matrix)


def test_a_pattern_reads_its_directory_as_daala_does(png2y4m, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rgbs = [frame(frames / f"{n:08d}.png", n) for n in (1, 2, 3)]
    frame(frames / "0000004.png", 4)  # seven digits: %08d prints 00000004.png, not this
    frame(frames / "000000005.png", 5)  # nine digits
    frame(frames / "x00000006.png", 6)
    frame(frames / "00000007.png.bak", 7)
    (frames / "00000008.jpg").write_bytes(b"not a png")
    (frames / "notes.txt").write_text("not a frame")
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(frames / "%08d.png"))
    assert proc.returncode == 0, proc.stderr
    assert_frames(read(out), rgbs)
    # relative to the working directory, as mu's worker runs it
    proc = run(png2y4m, "-o", "rel.y4m", "%08d.png", cwd=frames)
    assert proc.returncode == 0, proc.stderr
    assert (frames / "rel.y4m").read_bytes() == out.read_bytes()


def test_pattern_numbers_may_have_gaps_and_come_in_numeric_order(png2y4m, tmp_path):
    rgbs = {n: frame(tmp_path / f"f{n}.png", n) for n in (33, 2, 10, 1)}
    frame(tmp_path / "f01.png", 99)  # %d prints 1 as "1": "01" is not its name
    frame(tmp_path / "f+5.png", 98)  # nor "+5"
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / "f%d.png"))
    assert proc.returncode == 0, proc.stderr
    # daala sorts names (f1, f10, f2, f33); numbers are the order frames were meant to have
    assert_frames(read(out), [rgbs[n] for n in (1, 2, 10, 33)])


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("%3d", ["  7", " 12"]),  # width padding with spaces
        ("%-3d", ["7  ", "12 "]),
        ("%+d", ["+7", "+12"]),
        ("%.4u", ["0007", "0012"]),
        ("%i", ["7", "12"]),
    ],
)
def test_pattern_conversions_print_as_printf_does(png2y4m, tmp_path, spec, names):
    rgbs = [frame(tmp_path / f"p{name}.png", k) for k, name in enumerate(names)]
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / f"p{spec}.png"))
    assert proc.returncode == 0, proc.stderr
    assert_frames(read(out), rgbs)


@settings(max_examples=60)
@given(
    spec=st.tuples(
        st.sampled_from(["", "0", "-", "+", " ", "+0", "- "]),
        st.sampled_from(["", "1", "3", "8"]),
        st.sampled_from(["", ".2", ".5"]),
        st.sampled_from("diu"),
    )
    # C ignores the 0 flag when a precision is given, and + and space for %u; Python's % does
    # not, so those combinations are left out
    .filter(lambda t: not ("0" in t[0] and t[2]) and not (t[3] == "u" and t[0].strip("-0")))
    .map(lambda t: "%" + "".join(t)),
    numbers=st.sets(st.integers(-40, 100_000), min_size=1, max_size=5),
)
def test_a_pattern_takes_exactly_the_names_printf_prints(png2y4m, spec, numbers):
    """Python's % prints these d/i/u conversions as C's printf does: the files named so are
    the frames, in numeric order; names of the same numbers printed otherwise are not."""
    numbers = sorted(n for n in numbers if n >= 0 or spec[-1] != "u")
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for rank, n in enumerate(numbers):
            gray = np.full((2, 2), 20 + 40 * rank, dtype=np.uint8)
            (base / f"f{spec % n}.png").write_bytes(encode_png(gray))
        for n in numbers:  # other spellings of the same numbers
            for other in (f"{n}", f"0{spec % n}", f"{spec % n} ", f"{n:+d}"):
                if other != spec % n and not (base / f"f{other}.png").exists():
                    (base / f"f{other}.png").write_bytes(b"not a png: must not be read")
        proc = run(png2y4m, "-o", "-", str(base / f"f{spec}.png"), text=False)
        if not numbers:
            assert proc.returncode == 1 and b"matches the pattern" in proc.stderr
            return
        assert proc.returncode == 0, proc.stderr
        y4m = parse_y4m(proc.stdout)
        luma = [int(f[0][0, 0]) for f in y4m.frames]
        assert luma == [round(16 + 219 * (20 + 40 * rank) / 255) for rank in range(len(numbers))]


def test_a_pattern_that_matches_nothing_is_an_error(png2y4m, tmp_path):
    frame(tmp_path / "1.png", 1)
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / "%08d.png"))
    assert proc.returncode == 1
    assert f"no file in {tmp_path} matches the pattern {tmp_path}/%08d.png" in proc.stderr
    assert "names files like 00000001.png" in proc.stderr
    missing = run(png2y4m, "-o", str(out), str(tmp_path / "nowhere" / "%d.png"))
    assert missing.returncode == 1 and "cannot read the directory of pattern" in missing.stderr
    assert outputs(tmp_path) == []


def test_patterns_and_files_mix_in_argument_order(png2y4m, tmp_path):
    (tmp_path / "seq").mkdir()
    first = frame(tmp_path / "first.png", 10)
    seq = [frame(tmp_path / "seq" / f"{n:03d}.png", n) for n in (5, 6)]
    last = frame(tmp_path / "last.png", 11)
    out = tmp_path / "out.y4m"
    args = [str(tmp_path / "first.png"), str(tmp_path / "seq" / "%03d.png"), str(tmp_path / "last.png")]
    proc = run(png2y4m, "-o", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    assert_frames(read(out), [first, *seq, last])


def test_percent_signs_in_names(png2y4m, tmp_path):
    literal = frame(tmp_path / "50%.png", 1)  # no number conversion: a plain file name
    numbered = [frame(tmp_path / f"f%{n}.png", n) for n in (1, 2)]
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / "50%.png"), str(tmp_path / "f%%%d.png"))
    assert proc.returncode == 0, proc.stderr
    assert_frames(read(out), [literal, *numbered])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("%d-%d.png", "holds more than one number conversion"),
        ("%s%08d.png", "has a '%' that is not its number conversion; write a literal % as %%"),
    ],
)
def test_bad_patterns_are_usage_errors(png2y4m, tmp_path, arg, message):
    proc = run(png2y4m, "-o", str(tmp_path / "out.y4m"), str(tmp_path / arg))
    assert proc.returncode == 2
    assert message in proc.stderr and "usage: png2y4m" in proc.stderr
    assert outputs(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "rate", "aspect"),
    [
        ([], "24:1", "1:1"),
        (["-f", "30000", "-F", "1001"], "30000:1001", "1:1"),
        (["-f", "25"], "25:1", "1:1"),
        (["--framerate-numerator=60", "--framerate-denominator", "2"], "60:2", "1:1"),
        (["-s", "4", "-S", "3"], "24:1", "4:3"),
        (["--aspect-numerator", "0", "--aspect-denominator", "0"], "24:1", "0:0"),
        (["-r", "50:1", "-s", "16", "-S", "15"], "50:1", "16:15"),
    ],
)
def test_daala_frame_rate_and_aspect_options(png2y4m, tmp_path, options, rate, aspect):
    frame(tmp_path / "a.png", 1)
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, *options, "--output", str(out), str(tmp_path / "a.png"))
    assert proc.returncode == 0, proc.stderr
    assert (read(out).params["F"], read(out).params["A"]) == (rate, aspect)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-f", "0"], "must be positive"),
        (["-F", "x"], "take a whole number, got 'x'"),
        (["-f", "-3"], "take a whole number, got '-3'"),
        (["-r", "30:1", "-f", "30"], "as -r N:D or as -f N -F D, not both"),
        (["-s", "1", "-S", "0"], "0:0 for unknown"),
        (["-r", "0:1"], "frame rate must be N:D"),
        (["--chroma-420"], "usage: png2y4m"),
    ],
)
def test_bad_options_are_usage_errors(png2y4m, tmp_path, options, message):
    frame(tmp_path / "a.png", 1)
    proc = run(png2y4m, *options, "-o", str(tmp_path / "out.y4m"), str(tmp_path / "a.png"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert outputs(tmp_path) == []


def test_mu_runs_it_once_per_retrieved_frame(png2y4m, tmp_path):
    """mu's png2y4m job: retrieve one PNG into the temporary folder, run
    ``./png2y4m -i -d -o ##OUTFILE## ##INFILE##`` with ``##INFILE##`` = ``TMPDIR/%08d.png``, and
    again for the next frame. -d leaves only the new PNG for the pattern; -i appends it."""
    tmpdir, source = tmp_path / "tmp", tmp_path / "source"
    tmpdir.mkdir()
    source.mkdir()
    rgbs = [frame(source / f"{n:08d}.png", n) for n in (7, 8, 9, 10)]
    out = tmpdir / "00000001.y4m"
    for k, n in enumerate((7, 8, 9, 10)):
        shutil.copy(source / f"{n:08d}.png", tmpdir)
        proc = subprocess.run(
            f"./png2y4m -i -d -o {out} {tmpdir}/%08d.png", shell=True, cwd=png2y4m.parent,
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in tmpdir.iterdir()) == ["00000001.y4m"]  # the PNG is gone
        y4m = read(out)
        assert len(y4m.frames) == k + 1
        assert out.read_bytes().count(b"YUV4MPEG2") == 1
    assert_frames(read(out), rgbs)
    whole = tmp_path / "whole.y4m"
    assert run(png2y4m, "-o", str(whole), str(source / "%08d.png")).returncode == 0
    assert out.read_bytes() == whole.read_bytes()  # the same stream as one conversion


def test_incremental_append_refuses_a_mismatch_and_changes_nothing(png2y4m, tmp_path):
    out = tmp_path / "out.y4m"
    frame(tmp_path / "a.png", 1, h=8, w=8)
    assert run(png2y4m, "-o", str(out), str(tmp_path / "a.png")).returncode == 0
    before = out.read_bytes()
    frame(tmp_path / "wide.png", 2, h=8, w=10)
    proc = run(png2y4m, "-i", "-d", "-o", str(out), str(tmp_path / "wide.png"))
    assert proc.returncode == 1
    assert "holds 8x8 C420jpeg frames but" in proc.stderr and "makes 10x8 C420jpeg" in proc.stderr
    assert out.read_bytes() == before and (tmp_path / "wide.png").exists()

    frame(tmp_path / "b.png", 3, h=8, w=8)
    proc = run(png2y4m, "-i", "--chroma-444", "-o", str(out), str(tmp_path / "b.png"))
    assert proc.returncode == 1 and "makes 8x8 C444" in proc.stderr
    assert out.read_bytes() == before

    out.write_bytes(before[:-5])  # a stream cut short
    proc = run(png2y4m, "-i", "-o", str(out), str(tmp_path / "b.png"))
    assert proc.returncode == 1 and "does not end on a frame boundary" in proc.stderr
    assert out.read_bytes() == before[:-5]

    out.write_bytes(b"something else\n")
    proc = run(png2y4m, "-i", "-o", str(out), str(tmp_path / "b.png"))
    assert proc.returncode == 1 and "is not one; remove it or drop -i" in proc.stderr
    assert out.read_bytes() == b"something else\n"


def test_a_failed_append_cuts_the_output_back_and_deletes_nothing(png2y4m, tmp_path):
    out = tmp_path / "out.y4m"
    frame(tmp_path / "a.png", 1)
    assert run(png2y4m, "-o", str(out), str(tmp_path / "a.png")).returncode == 0
    before = out.read_bytes()
    frame(tmp_path / "00000001.png", 2)
    (tmp_path / "00000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = run(png2y4m, "-i", "-d", "-o", str(out), str(tmp_path / "%08d.png"))
    assert proc.returncode == 1 and "00000002.png" in proc.stderr
    assert out.read_bytes() == before  # the first new frame was written, then cut off again
    assert (tmp_path / "00000001.png").exists() and (tmp_path / "00000002.png").exists()


def test_delete_waits_for_the_output(png2y4m, tmp_path):
    frame(tmp_path / "a.png", 1)
    (tmp_path / "b.png").write_bytes(b"not a png")
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-d", "-o", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert proc.returncode == 1
    assert (tmp_path / "a.png").exists() and outputs(tmp_path) == []
    proc = run(png2y4m, "-d", "-o", str(out), str(tmp_path / "a.png"))
    assert proc.returncode == 0 and not (tmp_path / "a.png").exists() and out.exists()


def test_incremental_without_an_output_writes_a_new_one(png2y4m, tmp_path):
    rgbs = [frame(tmp_path / f"{n}.png", n) for n in (1, 2)]
    out = tmp_path / "out.y4m"
    out.write_bytes(b"")  # empty counts as absent
    proc = run(png2y4m, "-i", "-f", "30", "-o", str(out), str(tmp_path / "%d.png"))
    assert proc.returncode == 0, proc.stderr
    assert read(out).params["F"] == "30:1"
    assert_frames(read(out), rgbs)


def test_standard_input_and_output(png2y4m, tmp_path):
    frame(tmp_path / "a.png", 1)
    frame(tmp_path / "b.png", 2)
    out = tmp_path / "out.y4m"
    assert run(png2y4m, "-o", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png")).returncode == 0
    piped = subprocess.run(
        [str(png2y4m), "-o", "-", "-", str(tmp_path / "b.png")],
        input=(tmp_path / "a.png").read_bytes(), capture_output=True,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == out.read_bytes()
    twice = run(png2y4m, "-o", "-", "-", "-")
    assert twice.returncode == 2 and "give it once" in twice.stderr
    append = run(png2y4m, "-i", "-o", "-", str(tmp_path / "a.png"))
    assert append.returncode == 2 and "cannot write to standard output" in append.stderr


def test_output_mode_follows_the_umask(png2y4m, tmp_path):
    frame(tmp_path / "a.png", 1)
    out = tmp_path / "out.y4m"
    proc = subprocess.run(f"umask 027 && {png2y4m} -o {out} {tmp_path}/a.png", shell=True)
    assert proc.returncode == 0
    assert out.stat().st_mode & 0o777 == 0o640


def test_help_explains_both_command_lines(png2y4m):
    proc = run(png2y4m, "--help")
    assert proc.returncode == 0
    for text in ("%08d.png", "-i ", "-d ", "-f, --framerate-numerator", "--chroma-444", "--rec709"):
        assert text in proc.stdout


def test_mismatched_sizes_leave_no_output(png2y4m, tmp_path):
    write_input(tmp_path / "a.png", pattern(8, 8, 3, 8, 0), 8, 3)
    write_input(tmp_path / "b.png", pattern(8, 10, 3, 8, 0), 8, 3)
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert proc.returncode == 1
    assert "b.png is 10x8 but the first input is 8x8" in proc.stderr
    assert outputs(tmp_path) == []


@pytest.mark.parametrize("content", [b"not a png at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDRtruncated"])
def test_bad_input_is_a_clear_error(png2y4m, tmp_path, content):
    write_input(tmp_path / "good.png", pattern(4, 4, 1, 8, 0), 8, 1)
    (tmp_path / "bad.png").write_bytes(content)
    out = tmp_path / "out.y4m"
    proc = run(png2y4m, "-o", str(out), str(tmp_path / "good.png"), str(tmp_path / "bad.png"))
    assert proc.returncode == 1
    assert "bad.png" in proc.stderr
    assert outputs(tmp_path) == []


def test_a_directory_is_not_a_frame(png2y4m, tmp_path):
    (tmp_path / "00000001.png").mkdir()
    proc = run(png2y4m, "-o", str(tmp_path / "out.y4m"), str(tmp_path / "%08d.png"))
    assert proc.returncode == 1 and "00000001.png is a directory, not a PNG file" in proc.stderr


def test_usage_errors(png2y4m, tmp_path):
    assert run(png2y4m).returncode == 2
    missing = run(png2y4m, "-o", str(tmp_path / "o"), "nope.png")
    assert missing.returncode == 1 and "cannot open nope.png" in missing.stderr
