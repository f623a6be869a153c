"""The ``mu`` command line itself: defaults from the environment, help texts, and the README's
list of the environment variables mu reads."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from coordinator.cli import build_parser
from tests.conftest import ROOT

BAD_ENV = {"MU_PORT": "abc", "MU_WORKER_MEMORY": "abc", "MU_CONNECT_TIMEOUT": "x"}


def mu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_bad_environment_values_cost_nothing_until_their_option_is_used():
    for args in (["--version"], ["genkeys", "--help"], ["report", "--help"], ["run", "png2y4m", "--help"]):
        proc = mu(*args, env=BAD_ENV)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)


@pytest.mark.parametrize(
    ("variable", "value", "given", "message"),
    [
        ("MU_PORT", "abc", ("-t", "port", 5), "MU_PORT must be a port number, 0 to 65535, got 'abc'"),
        ("MU_WORKER_MEMORY", "abc", ("--worker-memory", "worker_memory", 512),
         "MU_WORKER_MEMORY must be a whole number of MB above 0, got 'abc'"),
        ("MU_WORKER_ARCH", "aarch64", ("--worker-arch", "worker_arch", "arm64"),
         "MU_WORKER_ARCH must be x86_64 or arm64, got 'aarch64'"),
        ("MU_CONNECT_TIMEOUT", "x", ("--connect-timeout", "connect_timeout", 9.0),
         "MU_CONNECT_TIMEOUT must be a number of seconds above 0, got 'x'"),
        ("MU_CONNECT_TIMEOUT", "-1", ("--connect-timeout", "connect_timeout", 9.0),
         "MU_CONNECT_TIMEOUT must be a number of seconds above 0, got '-1'"),
    ],
)  # fmt: skip
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    monkeypatch, capsys, variable, value, given, message
):
    monkeypatch.setenv(variable, value)
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["run", "png2y4m", "-b", "bkt"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mu run png2y4m") and message in err and "Traceback" not in err
    # Given on the command line, the option wins and the variable is never parsed.
    flag, dest, number = given
    args = parser.parse_args(["run", "png2y4m", "-b", "bkt", flag, str(number)])
    assert getattr(args, dest) == number


def test_good_environment_values_are_parsed_with_the_options_type(monkeypatch):
    monkeypatch.setenv("MU_PORT", "4000")
    monkeypatch.setenv("MU_WORKER_MEMORY", "1769")
    monkeypatch.setenv("MU_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("MU_WORKER_ARCH", "arm64")
    map_args = ["map", "--input", "s3://bkt/i/", "--output", "s3://bkt/o/", "--command", "x"]
    args = build_parser().parse_args(map_args)
    assert (args.port, args.worker_memory, args.connect_timeout) == (4000, 1769, 2.5)
    assert args.worker_arch == "arm64"
    monkeypatch.delenv("MU_WORKER_ARCH")
    monkeypatch.delenv("MU_PORT")
    monkeypatch.delenv("MU_WORKER_MEMORY")
    monkeypatch.delenv("MU_CONNECT_TIMEOUT")
    args = build_parser().parse_args(["run", "scan", "-b", "bkt"])
    assert (args.port, args.worker_memory, args.connect_timeout) == (13579, 3008, 300.0)
    assert args.worker_arch == "x86_64"


# How the code reads the environment: ``os.environ.get("X")``, ``os.environ["X"]``,
# ``os.getenv("X")``, ``env_default("X", ...)`` (an option's default), ``env.get("X")`` on a
# mapping of it (the only ``.get`` of an upper-case name in this code), constants naming a
# variable (``METADATA_ENV = "..."``) and tuples of them (``FILE_VARIABLES = (...)``).
READS = (
    re.compile(r"""(?:environ|getenv|env_default)(?:\.get)?\(\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""environ\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\](?!\s*=[^=])"""),
    re.compile(r"""\.get\(\s*["']([A-Z][A-Z0-9_]{2,})["']"""),
    re.compile(r"""^[A-Z_]*_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.M),
)
VARIABLE_TUPLE = re.compile(r"^[A-Z_]*_VARIABLES\s*=\s*\(([^)]*)\)", re.M)
SOURCES = ("coordinator", "lambda_worker", "stacks")


def variables_read() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    files = [p for d in SOURCES for p in sorted((ROOT / d).rglob("*.py"))] + [ROOT / "app.py"]
    for path in files:
        text = path.read_text()
        names = [m.group(1) for pattern in READS for m in pattern.finditer(text)]
        for m in VARIABLE_TUPLE.finditer(text):
            names += re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", m.group(1))
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("Environment variables `mu` reads")
    rows = text[start:].split("\n\n")[1]
    first_cells = [row.split(" | ")[0] for row in rows.splitlines()]
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_the_readme_lists_every_environment_variable_the_code_reads():
    found = variables_read()
    assert {"MU_PORT", "CA_CERT", "SRV_KEY", "MU_VPC_ID", "SSL_CERT_FILE"} <= set(found)  # the scan works
    missing = {name: sorted(where) for name, where in found.items() if name not in readme_table()}
    assert not missing, f"add these to the README's table of environment variables: {missing}"


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from all_parsers(sub)


def test_every_option_and_argument_has_help_and_every_command_a_description():
    from coordinator.local.demo import parse_args

    parsers = list(all_parsers(build_parser()))
    assert len(parsers) > 8
    for parser in parsers:
        if not parser.add_help:  # demo and submit: their own parsers, below and in aws tests
            continue
        assert parser.prog == "mu" or parser.description, parser.prog
        assert "``" not in (parser.description or ""), parser.prog
        plumbing = argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction
        for action in parser._actions:
            if not isinstance(action, plumbing):
                assert action.help, (parser.prog, action.dest)
    demo = mu("demo", "--help")
    assert demo.returncode == 0 and "``" not in demo.stdout and "--out DIR" in demo.stdout
    assert "mu-demo" in demo.stdout
    with pytest.raises(SystemExit):
        parse_args(["--help"])


def test_genkeys_and_relay_explain_themselves():
    genkeys = mu("genkeys", "--help").stdout
    assert "mu genkeys [-h] [--days DAYS] DIR" in genkeys and "never overwritten" in genkeys
    relay = mu("relay", "--help").stdout
    assert "HELLO_STATE:PREFIX:MYID:PARTNERID" in relay and "'mu genkeys' folder" in relay


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_backend_defaults_to_mu_backend_and_the_option_wins(monkeypatch):
    monkeypatch.delenv("MU_BACKEND", raising=False)
    assert parse("run", "png2y4m", "-b", "bkt").backend == "local"
    monkeypatch.setenv("MU_BACKEND", "aws")
    assert parse("run", "png2y4m", "-b", "bkt").backend == "aws"
    assert (
        parse("map", "--input", "s3://bkt/i/", "--output", "s3://bkt/o/", "--command", "true").backend
        == "aws"
    )
    assert parse("run", "png2y4m", "-b", "bkt", "--backend", "local").backend == "local"
    monkeypatch.setenv("MU_BACKEND", "")  # set but empty: as if unset
    assert parse("run", "png2y4m", "-b", "bkt").backend == "local"


def test_a_bad_mu_backend_is_one_line_and_exit_2():
    bad = mu("run", "png2y4m", "-b", "bkt", env={"MU_BACKEND": "lambda"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "mu: MU_BACKEND='lambda' is not a backend: set it to local or aws, or unset it "
        "(--backend local|aws overrides it)"
    ]
    # given on the command line, --backend wins over a bad variable (here: a dry run's usage error)
    fine = mu("run", "png2y4m", "-b", "bkt", "-n", "0", "--backend", "local", env={"MU_BACKEND": "lambda"})
    assert fine.returncode == 2 and "--workers must be at least 1" in fine.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-t", "70000"], "argument -t/--port: a port is 0 to 65535 (0: any free port), got 70000"),
        (["-t", "-1"], "argument -t/--port: a port is 0 to 65535"),
        (["--port", "http"], "argument -t/--port: expected a port number, got 'http'"),
    ],
)
def test_port_out_of_range_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse("run", "png2y4m", "-b", "bkt", *argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_relay_ports_are_checked_too(capsys):
    for argv in (
        ["run", "scan", "-b", "bkt", "--relay-port", "65536"],
        ["relay", "--keys", "k", "--port", "-2"],
    ):
        with pytest.raises(SystemExit) as exc:
            parse(*argv)
        assert exc.value.code == 2 and "a port is 0 to 65535" in capsys.readouterr().err
    # scan's relay takes PORT+1 unless told otherwise: -t 65535 leaves it none
    last = mu("run", "scan", "-b", "bkt", "-t", "65535", "--s3-endpoint", "http://127.0.0.1:9")
    assert last.returncode == 2
    assert "--port 65535 leaves no port for the job's relay (PORT+1): give --relay-port" in last.stderr


def test_mu_port_is_checked_as_the_option_is():
    bad = mu("run", "png2y4m", "-b", "bkt", env={"MU_PORT": "99999"})
    assert bad.returncode == 2 and "MU_PORT must be a port number, 0 to 65535, got '99999'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert parse("run", "png2y4m", "-b", "bkt", "-t", "0").port == 0  # any free port


JOBS = ROOT / "tests" / "libmu" / "jobs"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["run", "png2y4m", "-b", "bkt", "-n", "2", "--bogus"], "usage: mu run png2y4m "),
        (["run", "png2y4m", "-b", "bkt", "-n", "2", "extra"], "usage: mu run png2y4m "),
        (["run", "scan", "-b", "bkt", "--bogus"], "usage: mu run scan "),
        (["report", "x", "--bogus"], "usage: mu report "),
        (["genkeys", "d", "--bogus"], "usage: mu genkeys "),
        (["submit", "png2y4m", "--bogus"], "usage: mu run png2y4m "),  # the task's command, as mu run's
        (["map", "--input", "s3://f00/x/", "--output", "s3://f00/o/", "--command", "c", "--bogus"],
         "usage: mu map "),
        (["pymap", "m:f", "--items", "i.jsonl", "--bogus"], "usage: mu pymap "),
        (["run", str(JOBS / "project_job.py"), "--bogus"], f"usage: mu run {JOBS / 'project_job.py'}"),
    ],
)  # fmt: skip
def test_unknown_arguments_print_the_usage_of_the_command_given(argv, usage):
    proc = mu(*argv)
    assert proc.returncode == 2 and proc.stderr.startswith(usage), proc.stderr
    unknown = argv[-1]
    assert proc.stderr.rstrip().endswith(f"error: unrecognized arguments: {unknown}")
    assert "usage: mu [-h]" not in proc.stderr


def test_a_mu_job_file_run_by_python_reports_unknown_arguments_with_its_usage():
    job = str(JOBS / "png2y4m_job.py")
    for argv, said in (
        (["--bogus"], "option --bogus not recognized"),
        (["extra"], "extraneous arguments 'extra'"),
    ):
        proc = subprocess.run(
            [sys.executable, job, *argv], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert proc.returncode == 2 and said in proc.stderr and f"Usage: {job}" in proc.stderr, proc.stderr
        via_mu = mu("run", job, *argv)
        assert via_mu.returncode == 2 and said in via_mu.stderr and f"Usage: {job}" in via_mu.stderr


def test_an_unknown_job_name_says_how_job_files_and_map_are_given():
    proc = mu("run", "nosuchjob")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: mu run ")
    assert proc.stderr.splitlines()[-1] == (
        "mu run: error: argument JOB: no bundled job 'nosuchjob' (bundled: png2y4m, scan); a job file is "
        "given as its path, e.g. 'mu run ./JOB.py', and mapping a command over S3 objects is 'mu map'"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "png2y4m", "-b", ""], "argument -b/--bucket: expected an S3 bucket name, got ''"),
        (["run", "scan", "-b", "s3://frames/x"],
         "expected a bucket's name, not a URL: give 'frames' without s3://"),
        (["run", "png2y4m", "-b", "-frames"], "argument -b/--bucket: expected one argument"),
        (["run", "png2y4m", "-b", "a"], "expected an S3 bucket name, got 'a': 3 to 63 lowercase letters"),
        (["map", "--input", "s3://in_/x/", "--output", "s3://out/o/", "--command", "c"],
         "--input s3://in_/x/: expected an S3 bucket name, got 'in_'"),
        (["submit", "png2y4m", "-b", ""], "expected an S3 bucket name, got ''"),
    ],
)  # fmt: skip
def test_a_malformed_bucket_name_is_a_usage_error_before_any_s3_call(argv, said):
    proc = mu(*argv, env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"})
    assert proc.returncode == 2 and proc.stderr.startswith("usage: mu "), proc.stderr
    assert (
        said in proc.stderr.splitlines()[-1]
        and "Traceback" not in proc.stderr
        and "botocore" not in proc.stderr
    )


def test_legacy_bucket_names_pass_the_shape_check():
    from coordinator.preflight.io import bucket_problem

    for name in ("frames", "my.bucket-1", "Old_Bucket", "a" * 63, "x1y"):
        assert bucket_problem(name) is None, name
    for name in ("", "ab", "-ab", "ab-", "a b", "a/b", "s3://ab1"):
        assert bucket_problem(name), name


def test_genkeys_names_a_folder_it_cannot_use(tmp_path):
    file = tmp_path / "f"
    file.write_text("")
    for folder, said in (
        (
            "/proc/x",
            "cannot write the keys to /proc/x: No such file or directory; give a folder you can write",
        ),
        (str(file), f"{file} exists and is not a folder; give a folder for the keys"),
    ):
        proc = mu("genkeys", folder)
        assert proc.returncode == 2 and proc.stderr.startswith("usage: mu genkeys "), proc.stderr
        assert proc.stderr.splitlines()[-1] == f"mu genkeys: error: {said}"
    assert not os.path.exists("/proc/x")


@pytest.mark.parametrize(
    ("folder", "said"),
    [
        ("/proc/logs", "--log-dir /proc/logs: cannot create this folder (No such file or directory); "
                       "name a folder you can write"),
        ("{tmp}/no/such/logs",
         "--log-dir {tmp}/no/such/logs: the folder {tmp}/no/such does not exist; create it first "
         "(mu makes only the last folder of --log-dir), or name a folder in an existing one"),
        ("{tmp}/file", "--log-dir {tmp}/file exists and is not a folder; name a folder for the worker logs"),
    ],
)  # fmt: skip
def test_log_dir_is_checked_before_anything_starts(tmp_path, folder, said):
    (tmp_path / "file").write_text("")
    folder, said = folder.format(tmp=tmp_path), said.format(tmp=tmp_path)
    proc = mu("run", "png2y4m", "-b", "bkt", "-t", "0", "--log-dir", folder,
              env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"})  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("usage: mu run png2y4m "), proc.stderr
    assert proc.stderr.splitlines()[-1] == f"mu run png2y4m: error: {said}"
    assert not (tmp_path / "no").exists() and "listening" not in proc.stderr


def test_log_dir_made_only_as_its_last_folder_and_only_by_the_run(tmp_path):
    from coordinator.preflight.checks import check_log_dir

    check_log_dir(str(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == []  # tried, and nothing left until the run makes it
    (tmp_path / "old").mkdir()
    check_log_dir(str(tmp_path / "old"))
    assert list((tmp_path / "old").iterdir()) == []
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(ValueError, match="cannot write in this folder"):
            check_log_dir(str(tmp_path / "ro"))


def test_the_local_quickstart_needs_only_what_make_venv_installs(s3, tmp_path):
    """Every program the README's local quickstart runs is in the venv (or is make / the shell),
    and its aws lines work against a local S3 with the venv's AWS CLI."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Local quickstart", 1)[1].split("```", 2)[1]
    programs = {line.split()[0] for line in block.splitlines() if line.strip() and not line.startswith("#")}
    venv = os.path.dirname(sys.executable)
    outside = {"make", "export", "."}
    assert programs - outside <= {"python", "mu", "aws"}, programs
    for program in programs - outside:
        assert os.access(os.path.join(venv, program), os.X_OK), program
    aws = os.path.join(venv, "aws")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3.endpoint, "AWS_ACCESS_KEY_ID": "local",
           "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    pngs = tmp_path / "my-pngs"
    pngs.mkdir()
    (pngs / "00000001.png").write_bytes(b"frame")
    bucket = f"quickstart-{os.getpid()}"
    for argv in (
        ["s3", "mb", f"s3://{bucket}"],
        ["s3", "cp", "--recursive", str(pngs), f"s3://{bucket}/clip-png16/"],
    ):
        done = subprocess.run([aws, *argv], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
    got = s3.client("s3").get_object(Bucket=bucket, Key="clip-png16/00000001.png")["Body"].read()
    assert got == b"frame"
