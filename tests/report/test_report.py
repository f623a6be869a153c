"""``mu report`` on timing logs of real local runs: the tables and the timeline picture."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from PIL import Image

from coordinator.report import timeline
from coordinator.report.analysis import analyze
from tests.helpers import scan_input
from tests.report.runs import mu, run_png2y4m

PNG2Y4M_STATES = ("configuring the worker", "retrieving a PNG", "converting and uploading")


@pytest.fixture(scope="module")
def logs(s3, tmp_path_factory):
    """Timing logs of three real runs: png2y4m, scan, and a png2y4m whose chunk 1 fails."""
    tmp = tmp_path_factory.mktemp("report")
    good, good_log = run_png2y4m(s3, tmp)
    assert good.returncode == 0, good.stderr
    bucket, _chunks = scan_input(s3, "scan-in/", 3)
    scan_log = tmp / "scan.json"
    scan = mu(
        "run",
        "scan",
        "-n",
        "3",
        "-b",
        bucket,
        "-t",
        "0",
        "-O",
        str(scan_log),
        "-m",
        "60",
        "--s3-endpoint",
        s3.endpoint,
        "--log-dir",
        str(tmp / "scan-logs"),
    )
    assert scan.returncode == 0, scan.stderr
    failed, failed_log = run_png2y4m(s3, tmp, workers=3, frames=2, bad=4)  # frame 4 is chunk 1's
    return {"png2y4m": (good, good_log), "scan": (scan, scan_log), "failed": (failed, failed_log)}


def picture_colours(path) -> dict[tuple[int, int, int], int]:
    image = Image.open(path).convert("RGB")
    counts: dict[tuple[int, int, int], int] = {}
    for count, colour in image.getcolors(maxcolors=1 << 20):
        counts[colour] = count
    return counts


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def check_picture(path, doc, must_show: tuple[str, ...]) -> None:
    a = analyze(doc)
    image = Image.open(path)
    width, height = timeline.figure_size(len(a.rows))
    assert image.format == "PNG"
    assert image.size == (int(width * timeline.DPI), int(height * timeline.DPI))
    colours = timeline.state_colours(timeline.visible_states(a))
    assert set(must_show) <= set(colours), colours
    counts = picture_colours(path)
    for name, colour in colours.items():  # every state drawn, in its own colour, and in the legend
        assert counts.get(rgb(colour), 0) > 100, (name, colour)
    assert counts.get(rgb(timeline.WAIT_COLOUR), 0) > 100  # launched, not yet connected


def test_png2y4m_report_and_picture(logs, tmp_path):
    run, log = logs["png2y4m"]
    assert "wrote 4 objects: s3://" in run.stdout and "/clip-y4m_03/ (4)" in run.stdout
    assert f"timing log: {log}" in run.stdout and "worker logs: " in run.stdout
    doc = json.loads(log.read_text())
    assert doc["schema"] == 2 and doc["backend"] == "local" and doc["job_id"].startswith("png2y4m-")
    assert [e["worker"] for e in doc["launches"]] == [0, 1, 2, 3]
    for e in doc["launches"]:
        assert 0 <= e["sent"] <= e["accepted"]
    for rec in doc["records"]:
        assert rec["launch"]["accepted"] <= rec["connected"] <= rec["ended"]
        assert rec["label"].startswith("reads clip-png16/") and "writes clip-y4m_03/" in rec["label"]
    assert doc["outputs"]["count"] == 4 and doc["s3_requests"] == {"get": 12, "put": 4, "list": 1}

    png = tmp_path / "timeline.png"
    out = mu("report", str(log), "--png", str(png))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in (
        "Time in each state",
        "launch -> connect",
        "worker wall time",
        "No failures.",
        "Outputs: 4 objects written",
        "Cost: none on the local backend",
        *PNG2Y4M_STATES,
    ):
        assert expected in text, expected
    row = next(line for line in text.splitlines() if "retrieving a PNG" in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[1:4] == ["retrieving a PNG", "4", "12"]  # 4 workers, 12 visits (3 frames each)
    check_picture(png, doc, PNG2Y4M_STATES)


def test_scan_report_and_picture(logs, tmp_path):
    _run, log = logs["scan"]
    doc = json.loads(log.read_text())
    png = tmp_path / "scan.png"
    out = mu("report", str(log), "--png", str(png))
    assert out.returncode == 0, out.stderr
    assert "fetching and summarising the chunk" in out.stdout
    assert "combining and passing the state on" in out.stdout
    assert "Outputs: 3 objects written" in out.stdout
    check_picture(png, doc, ("fetching and summarising the chunk",))


def test_failed_run_report_names_the_chunk_and_reason(logs, tmp_path):
    run, log = logs["failed"]
    assert run.returncode == 1
    # The failed chunk is named by its S3 keys, and the run still says what it wrote.
    who = (
        "actor 1 (reads clip-png16/00000003.png .. clip-png16/00000004.png, writes clip-y4m_02/00000001.y4m)"
    )
    assert who in run.stderr and "not a PNG" in run.stderr
    assert "wrote 2 objects" in run.stderr
    doc = json.loads(log.read_text())
    assert doc["ok"] is False and who in doc["failures"]
    png, page = tmp_path / "failed.png", tmp_path / "failed.html"
    out = mu("report", str(log), "--png", str(png), "--html", str(page))
    assert out.returncode == 0, out.stderr
    assert "FAILED (1 of 3 actors)" in out.stdout and "Failures" in out.stdout
    assert "not a PNG" in out.stdout and "actor 1 (reads clip-png16/00000003.png" in out.stdout
    error_rows = [line for line in out.stdout.splitlines() if line.startswith("│ error ")]
    assert len(error_rows) == 1 and [c.strip() for c in error_rows[0].split("│")][2] == "1"  # one state
    check_picture(png, doc, ("configuring the worker", "retrieving a PNG"))
    assert picture_colours(png).get(rgb(timeline.ERROR_COLOUR), 0) > 20  # the failure is marked
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html and "Failures" in html


def test_report_of_a_file_that_is_not_a_timing_log(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    out = mu("report", str(bad))
    assert out.returncode == 1 and "not a timing log" in out.stderr and "usage" not in out.stderr
    missing = mu("report", str(tmp_path / f"{uuid.uuid4().hex}.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_report_file_errors_are_one_clear_line(logs, tmp_path):
    _, log = logs["png2y4m"]
    nowhere = mu("report", str(log), "--png", "/nonexistent/dir/t.png")
    assert nowhere.returncode == 2 and nowhere.stdout == ""  # found before any table is printed
    assert nowhere.stderr.startswith("usage: mu report")
    assert nowhere.stderr.splitlines()[-1] == (
        "mu report: error: --png /nonexistent/dir/t.png: the folder /nonexistent/dir does not exist; "
        "create it, or name a file in an existing folder"
    )
    folder = mu("report", str(log), "--html", str(tmp_path))
    assert folder.returncode == 2
    assert f"--html {tmp_path}: {tmp_path} is a folder; name a file" in folder.stderr
    full = mu("report", str(log), "--png", "/dev/full")  # passes the check, fails when written
    assert full.returncode == 1 and "Errno" not in full.stderr
    said = "mu report: cannot write the timeline picture to /dev/full: No space left on device\n"
    assert full.stderr == said
    missing = mu("report", str(tmp_path / "none.json"))
    assert missing.returncode == 1 and "Errno" not in missing.stderr
    assert "No such file or directory; give a timing log written by 'mu run ... -O FILE'" in missing.stderr


def test_report_into_a_closed_stdout_ends_quietly_and_writes_its_files(logs, tmp_path):
    """``mu report T.json --png P --html H | head -1``."""
    _, log = logs["png2y4m"]
    png, page = tmp_path / "t.png", tmp_path / "t.html"
    cmd = [sys.executable, "-m", "coordinator", "report", str(log), "--png", str(png), "--html", str(page)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert first.startswith("mu png2y4m ")
    assert proc.returncode == 0 and err == ""
    check_picture(png, json.loads(log.read_text()), PNG2Y4M_STATES)
    assert "Time in each state" in page.read_text()
