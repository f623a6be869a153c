"""``server.options``: mu's flags from a job's settings class, with mu's meaning, plus ours."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.jobs import load_job_file
from coordinator.launch import make_events
from coordinator.libmu import server
from lambda_worker.event import parse_event


def png2y4m_settings() -> type:
    """The tests' mu-style png2y4m job's settings (mu's png2y4m_server attributes), fresh."""
    base = load_job_file(str(Path(__file__).parent / "jobs" / "png2y4m_job.py")).ServerInfo
    return type("ServerInfo", (base,), {})


def xcenc_settings() -> type:
    """The attributes of mu's xcenc_server.ServerInfo."""

    class ServerInfo:
        states: list = []
        host_addr = None
        port_number = 13579
        state_srv_addr = "127.0.0.1"
        state_srv_port = 13337
        state_srv_threads = 1
        upload_states = False
        quality_y = 30
        quality_s = None
        quality_str = "30_x"
        video_name = "sintel-1k-y4m_06"
        num_offset = 0
        num_parts = 1
        overprovision = 25
        tot_passes = 9
        keyframe_distance = None
        num_passes = (1, 0, 3, 2)
        min_passes = (1, 0, 1, 2)
        lambda_function = "xcenc"
        regions = ["us-east-1"]
        bucket = "excamera-us-east-1"
        out_file = None
        profiling = None
        cacert = srvcrt = srvkey = None
        client_uniq = None
        hashed_names = False

    return ServerInfo


def vpx_ssim_settings() -> type:
    class ServerInfo:
        quality_values = [0, 8, 16]
        quality_valstring = "0_8_16"
        run_xcenc = False
        port_number = 13579
        video_name = "sintel-1k-y4m_06"
        num_parts = 1
        num_offset = 0
        lambda_function = "vpxenc"
        regions = ["us-east-1"]
        bucket = "excamera-us-east-1"
        out_file = None
        profiling = None
        cacert = srvcrt = srvkey = None
        num_list = None

    return ServerInfo


def linpack_settings() -> type:
    class ServerInfo:
        states: list = []
        host_addr = None
        port_number = 13579
        regions = ["us-east-1"]
        num_parts = 16
        overprovision = 0
        lambda_function = "linpack_bench_d"
        cacert = srvcrt = srvkey = None
        profiling = None
        out_file = None
        kill_time = None
        kill_state = None

    return ServerInfo


@pytest.fixture(autouse=True)
def no_user_certificates(monkeypatch):
    for name in ("CA_CERT", "SRV_CERT", "SRV_KEY", "MU_BACKEND"):
        monkeypatch.delenv(name, raising=False)


def parse(monkeypatch, settings: type, *argv: str) -> type:
    monkeypatch.setattr("sys.argv", ["job.py", *argv])
    server.options(settings)
    return settings


# The getopt strings mu's usage_str builds for these settings classes (from mu's own run).
@pytest.mark.parametrize(
    ("settings", "optstring"),
    [
        (png2y4m_settings, "UDO:P:n:f:o:v:b:i:t:l:r:c:s:k:"),
        (xcenc_settings, "UDO:P:n:X:o:Y:S:K:up:v:b:h:t:H:T:R:l:r:Mc:s:k:"),
        (vpx_ssim_settings, "UDO:P:n:N:o:q:xv:b:t:l:r:c:s:k:"),
        (linpack_settings, "UDO:P:n:X:h:t:l:r:m:c:s:k:"),
    ],
)
def test_usage_str_builds_mus_getopt_string(settings, optstring):
    usage, opts = server.usage_str(settings())
    assert opts == optstring
    assert "-n nParts:" in usage and "--backend" in usage and "--s3-endpoint" in usage


def test_flags_set_the_settings_as_mu(monkeypatch):
    s = parse(
        monkeypatch,
        png2y4m_settings(),
        "-n",
        "4",
        "-f",
        "3",
        "-o",
        "2",
        "-v",
        "clip",
        "-b",
        "bkt",
        "-i",
        "png8",
        "-t",
        "0",
        "-l",
        "fn",
        "-r",
        "us-west-2,eu-west-1",
        "-O",
        "t.json",
        "-P",
        "p.prof",
    )
    assert (s.num_parts, s.num_frames, s.num_offset, s.video_name, s.bucket, s.in_format) == (
        4,
        3,
        2,
        "clip",
        "bkt",
        "png8",
    )
    assert (s.port_number, s.lambda_function, s.regions) == (0, "fn", ["us-west-2", "eu-west-1"])
    assert (s.out_file, s.profiling) == ("t.json", "p.prof")


def test_xcenc_flags_and_derived_settings(monkeypatch):
    s = parse(
        monkeypatch,
        xcenc_settings(),
        "-n",
        "10",
        "-K",
        "4",
        "-Y",
        "40",
        "-S",
        "50",
        "-u",
        "-M",
        "-X",
        "2",
        "-h",
        "10.0.0.1",
        "-H",
        "10.0.0.2",
        "-T",
        "2000",
        "-R",
        "2",
    )
    assert s.keyframe_distance == 4 and s.upload_states and s.hashed_names and s.overprovision == 2
    assert s.quality_str == "40_50_k4"  # recomputed from -Y, -S and -K as mu does
    assert s.num_passes == (1, 4, 0, 0)  # -K fixes the passes
    assert s.tot_passes == 9  # ... and leaves tot_passes alone, as mu does
    assert (s.host_addr, s.state_srv_addr, s.state_srv_port, s.state_srv_threads) == (
        "10.0.0.1",
        "10.0.0.2",
        2000,
        2,
    )


def test_passes_flag(monkeypatch, capsys):
    s = parse(monkeypatch, xcenc_settings(), "-p", "2, 0, 3, 4")
    assert s.num_passes == (2, 0, 3, 4) and s.tot_passes == 9 and s.quality_str == "30_x"
    for bad, why in (("1,0,0,2", "must be at least"), ("1,0,x,2", "four whole numbers"), ("1,0,2", "four")):
        monkeypatch.setattr("sys.argv", ["job.py", "-p", bad])
        with pytest.raises(SystemExit) as exc:
            server.options(xcenc_settings())
        assert exc.value.code == 2 and why in capsys.readouterr().err


def test_phase_two_passes_without_keyframes_is_an_error(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse(monkeypatch, xcenc_settings(), "-p", "1,2,3,2")
    assert "phase two" in capsys.readouterr().err


def test_num_list_and_quality_values_each_work(monkeypatch):
    # mu handled -N and -q in one branch (its -q branch was dead) and both crashed on None
    s = parse(monkeypatch, vpx_ssim_settings(), "-N", "3, 5,8", "-q", "1,2", "-x")
    assert s.num_list == [3, 5, 8] and s.num_parts == 3
    assert s.quality_values == [1, 2] and s.quality_valstring == "1_2" and s.run_xcenc


def test_num_list_with_n_or_o_is_an_error(monkeypatch, capsys):
    for flags in (("-N", "1,2", "-n", "3"), ("-o", "1", "-N", "1,2")):
        with pytest.raises(SystemExit) as exc:
            parse(monkeypatch, vpx_ssim_settings(), *flags)
        assert exc.value.code == 2
    assert "-N names the chunks to run" in capsys.readouterr().err


def test_kill_time_flag(monkeypatch):
    assert parse(monkeypatch, linpack_settings(), "-m", "30").kill_time == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "x"], "-n takes a whole number, got 'x'"),
        (["-n", "0"], "-n must be at least 1"),
        (["-K", "2"], "option -K not recognized"),  # png2y4m's settings have no keyframe_distance
        (["extra"], "extraneous arguments 'extra'"),
        (["--backend", "gcp"], "invalid choice"),
        (
            ["-c", "/no/such/ca.pem", "-s", "x", "-k", "y"],
            "cannot open SSL cert or key file '/no/such/ca.pem'",
        ),
        (["-c", "ca.pem"], "give all of -c caCert, -s srvCert and -k srvKey"),
        (["--kill-time", "0"], "must be greater than 0"),
        (["-b", ""], "-b needs the name of the S3 bucket the job reads and writes, got ''"),
        (["-b", "s3://frames"], "-b: expected a bucket's name, not a URL: give 'frames' without s3://"),
        (["-t", "70000"], "-t takes a port from 0 to 65535 (0: any free port), got 70000"),
        (["-t", "-1"], "-t takes a port from 0 to 65535"),
    ],
)
def test_bad_flags_print_the_usage_and_exit_2(monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        parse(monkeypatch, png2y4m_settings(), *argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Usage:" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-T", "70000"], "-T takes a port from 1 to 65535, got 70000"),
        # the states write -T into connect: as each worker connects: 'any free port' cannot work
        (["-T", "0"], "-T takes a port from 1 to 65535, got 0 (the job's states put it into their connect:"),
        (["-T", "65535", "-R", "2"], "-T 65535 with -R 2 needs ports 65535 to 65536, past 65535"),
        (["-R", "3", "-T", "65534"], "-T 65534 with -R 3 needs ports 65534 to 65536"),
    ],
)
def test_relay_ports_out_of_range_are_usage_errors(monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        parse(monkeypatch, xcenc_settings(), *argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Usage:" in err


def test_port_zero_picks_a_free_port_and_the_last_relay_port_is_allowed(monkeypatch):
    s = parse(monkeypatch, xcenc_settings(), "-t", "0", "-T", "65534", "-R", "2", "--backend", "local",
              "--s3-endpoint", "http://127.0.0.1:9")  # fmt: skip
    assert (s.port_number, s.state_srv_port) == (0, 65534)
    assert server._job(object, s, server._RUNS[id(s)]).relay_ports == (65534, 65535)


def test_mu_backend_is_the_default_backend_of_a_job_file(monkeypatch, capsys):
    monkeypatch.setenv("MU_BACKEND", "aws")
    s = parse(monkeypatch, png2y4m_settings())
    assert server._RUNS[id(s)].args.backend == "aws"
    s = parse(monkeypatch, png2y4m_settings(), "--backend", "local", "--s3-endpoint", "http://127.0.0.1:9")
    assert server._RUNS[id(s)].args.backend == "local"
    monkeypatch.setenv("MU_BACKEND", "gcp")
    with pytest.raises(SystemExit) as exc:
        parse(monkeypatch, png2y4m_settings())
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mu: MU_BACKEND='gcp' is not a backend: set it to local or aws, or unset it "
        "(--backend local|aws overrides it)"
    ]


def test_u_shows_the_usage_and_exits_0(monkeypatch, capsys):
    for flag in ("-U", "--help"):
        with pytest.raises(SystemExit) as exc:
            parse(monkeypatch, png2y4m_settings(), flag)
        assert exc.value.code == 0
        assert "-f nFrames:" in capsys.readouterr().out


def test_long_options_a_mu_flag_covers_exist_only_when_the_flag_does(monkeypatch, capsys):
    # linpack has kill_time and overprovision: -m and -X, so no --kill-time or --spares
    for flag in ("--kill-time=5", "--spares=1", "--port=1", "--timing-log=x"):
        with pytest.raises(SystemExit):
            parse(monkeypatch, linpack_settings(), flag)
    assert "not recognized" in capsys.readouterr().err
    # png2y4m has neither: the project's long forms stand in
    parse(monkeypatch, png2y4m_settings(), "--kill-time", "5", "--spares", "1", "--retries", "2")


def test_project_options_reach_the_coordinator(monkeypatch):
    s = parse(
        monkeypatch,
        png2y4m_settings(),
        "-n",
        "2",
        "-t",
        "0",
        "-O",
        "log.json",
        "-P",
        "p.prof",
        "--backend",
        "aws",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        "--lambda-endpoint",
        "http://x:1",
        "--kill-time",
        "7",
        "--spares",
        "1",
        "--retries",
        "2",
        "--command",
        "png2y4m -o ##OUTFILE## ##INFILE##",
    )
    server.server_launch(
        s, {"nonblock": 1, "bg_silent": 1, "srvkey": "SECRET", "bucket": "bk", "addr": None}, "akid", "secret"
    )
    run = server._RUNS[id(s)]
    args = server._coordinator_args(s, run)
    assert (args.backend, args.s3_endpoint, args.lambda_endpoint) == (
        "aws",
        "http://127.0.0.1:9",
        "http://x:1",
    )
    assert (args.port, args.timing_log, args.cprofile, args.kill_time) == (0, "log.json", "p.prof", 7.0)
    assert (args.spares, args.retries, args.function, args.regions) == (1, 2, "png2y4m", "us-east-1")
    job = server._job(object, s, run)
    assert job.workers == 2 and job.nonblock == 1 and job.bucket == "bk"
    assert job.command == "png2y4m -o ##OUTFILE## ##INFILE##"
    assert job.event == {"bg_silent": 1}  # the server key and mu's addressing never reach a worker
    assert job.order is None and job.groups is None and job.relay_ports == ()
    event = make_events(job, "job-1", "127.0.0.1:9", make_job_keys(), 1)[0]
    assert "SECRET" not in json.dumps(event) and "akid" not in json.dumps(event)
    worker_view = parse_event(event)
    assert worker_view.flags["bg_silent"] == 1 and worker_view.nonblock == 1 and worker_view.bucket == "bk"


def test_mu_flags_win_over_settings_defaults_for_the_coordinator(monkeypatch):
    s = parse(monkeypatch, linpack_settings(), "-m", "12", "-X", "3", "-h", "10.1.1.1", "-l", "f1,f2")
    args = server._coordinator_args(s, server._RUNS[id(s)])
    assert (args.kill_time, args.spares, args.advertise, args.function) == (12, 3, "10.1.1.1", "f1,f2")


def test_keyframe_distance_orders_actors_and_groups_go_to_the_constructor(monkeypatch):
    s = parse(monkeypatch, xcenc_settings(), "-n", "10", "-K", "4", "-T", "2000", "-R", "3")
    job = server._job(object, s, server._RUNS[id(s)])
    assert job.order == [0, 4, 8, 1, 5, 9, 2, 6, 3, 7]
    assert job.groups == {a: a // 4 for a in range(10)}
    assert job.relay_ports == (2000, 2001, 2002)


def test_keyframe_distance_without_state_server_threads_passes_no_group(monkeypatch):
    settings = xcenc_settings()
    del settings.state_srv_threads
    s = parse(monkeypatch, settings, "-n", "4", "-K", "2")
    job = server._job(object, s, server._RUNS[id(s)])
    assert job.order == [0, 2, 1, 3] and job.groups is None and job.relay_ports == (13337,)


def test_user_certificates_from_the_environment_as_mu(monkeypatch, tmp_path):
    paths = []
    for name, body in (("CA_CERT", "Q0E="), ("SRV_CERT", "U1JW"), ("SRV_KEY", "S0VZ")):
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN X-----\n{body}\n-----END X-----\n")
        monkeypatch.setenv(name, str(path))
        paths.append(str(path))
    s = parse(monkeypatch, png2y4m_settings(), "-k", paths[2])
    assert (s.cacert, s.srvcrt, s.srvkey) == ("Q0E=", "U1JW", "S0VZ")  # mu's read_pem bodies
    assert server._RUNS[id(s)].certs == tuple(paths)


def test_local_run_without_credentials_gets_the_local_s3_test_keys(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    parse(monkeypatch, png2y4m_settings(), "--s3-endpoint", "http://127.0.0.1:9")
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"  # what mu's main() reads


def test_no_credentials_anywhere_is_a_clear_error(monkeypatch, capsys, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SystemExit) as exc:
        parse(monkeypatch, png2y4m_settings(), "--backend", "aws")
    assert exc.value.code == 2 and "no AWS credentials" in capsys.readouterr().err


def test_to_numlist_fills_the_list_in_place():
    values = [9]
    server.to_numlist("1, 2,,3", values)
    assert values == [1, 2, 3]


def test_states_that_send_a_bare_run_are_found_before_launch(monkeypatch, capsys):
    """mu's png2y4m and vpxenc send a bare ``run:`` (the command mu built into the Lambda
    function); without --command every worker would fail on it, so the job does not start."""
    module = load_job_file(str(Path(__file__).parent / "jobs" / "png2y4m_job.py"))
    assert server.bare_run_states(module.ConfigState) == ["RetrieveAndRunState"]
    xcenc_like = load_job_file(str(Path(__file__).parent / "jobs" / "relay_greet_server.py"))
    assert server.bare_run_states(xcenc_like.GreetState) == []  # its run: is made in __init__

    s = parse(monkeypatch, module.ServerInfo, "--s3-endpoint", "http://127.0.0.1:9")
    server.server_launch(s, {"nonblock": 0, "bucket": "b"}, "", "")
    with pytest.raises(SystemExit) as exc:
        server.server_main_loop([], module.ConfigState, s)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: this job's states send a bare 'run:' (RetrieveAndRunState)")
    assert "Pass that command with --command 'CMD'" in err


def test_no_sandbox_needs_a_second_acknowledgement_for_a_mu_job_file(monkeypatch, capsys):
    """Issue 11: mu refuses jobs that need a sandbox unless explicitly told. mu's job files
    begin with run:rm -rf /tmp/*, so --no-sandbox alone is not enough for them."""
    local = ["--backend", "local", "--s3-endpoint", "http://127.0.0.1:9"]
    with pytest.raises(SystemExit) as exc:
        parse(monkeypatch, png2y4m_settings(), *local, "--no-sandbox")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: --no-sandbox would run this mu job file's workers as plain processes")
    assert "'run:rm -rf /tmp/*', which here would empty this machine's /tmp" in err
    assert "add --allow-host-tmp to --no-sandbox if you accept that" in err
    s = parse(monkeypatch, png2y4m_settings(), *local, "--no-sandbox", "--allow-host-tmp")
    assert server._RUNS[id(s)].args.no_sandbox
    parse(monkeypatch, png2y4m_settings(), *local)  # sandboxed: nothing to acknowledge
    assert "--allow-host-tmp" in server.usage_str(png2y4m_settings())[0]
