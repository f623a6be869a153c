"""mu's ``libmu.server`` for job files: ``options``, ``server_launch``, ``server_main_loop``.

A mu job file keeps its settings in a class (mu calls it ``ServerInfo``); ``options`` reads
``sys.argv`` into it with mu's flags, which exist only when the class has the matching
attribute (``-K`` needs ``keyframe_distance`` ...), plus this project's long options that
choose where workers run (``--backend``, ``--s3-endpoint``, ...). ``server_launch`` records the
invocation event the job built, and ``server_main_loop`` runs the job on this project's
coordinator: workers launched locally or on Lambda, mutual TLS, the relay as mu's state server.
"""

from __future__ import annotations

import argparse
import getopt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from coordinator.core.job import Job
from coordinator.core.roster import rotating_goose
from coordinator.libmu import util
from coordinator.libmu.defs import Defs
from coordinator.preflight.io import bucket_problem

__all__ = [
    "_compute_actor_number",
    "options",
    "server_launch",
    "server_main_loop",
    "to_numlist",
    "usage_str",
]

# Project options that a mu flag already covers: (option dest, the settings attribute that
# brings the mu flag; None when the flag always exists). The long form is accepted only when
# the job's settings lack the attribute, so each setting has exactly one spelling.
_COVERED = {
    "port": None,  # -t
    "debug": None,  # -D
    "ca_cert": None,  # -c
    "server_cert": None,  # -s
    "server_key": None,  # -k
    "kill_time": "kill_time",  # -m
    "timing_log": "out_file",  # -O
    "cprofile": "profiling",  # -P
    "advertise": "host_addr",  # -h
    "function": "lambda_function",  # -l
    "regions": "regions",  # -r
    "spares": "overprovision",  # -X
    "relay_port": None,  # a mu job's relays are at -T (and on, with -R)
}
# Fields of a mu event that the project's own event fields replace.
_EVENT_OWN = ("mode", "port", "addr", "cacert", "srvcrt", "srvkey", "nonblock", "bucket", "region")


@dataclass
class _Run:
    """What ``options`` and ``server_launch`` learnt, for ``server_main_loop``."""

    args: argparse.Namespace
    usage: str
    certs: tuple[str | None, str | None, str | None] = (None, None, None)
    command: str = ""
    event: dict[str, Any] | None = None
    given: set[str] = field(default_factory=set)  # mu flags given on the command line


_RUNS: dict[int, _Run] = {}

NO_SANDBOX_REFUSED = (
    "--no-sandbox would run this mu job file's workers as plain processes on this machine. mu's "
    "jobs were written for Lambda, where /tmp is the worker's own: they start with "
    "'run:rm -rf /tmp/*', which here would empty this machine's /tmp (and the workers would share "
    "its files). Run the job sandboxed (bubblewrap: README, 'Local workers are sandboxed'), or add "
    "--allow-host-tmp to --no-sandbox if you accept that"
)

MAX_PORT = 65535
# mu's flags by what they set: text, a whole number (with its least and greatest value), or True.
_TEXT_FLAGS = {
    "v": "video_name",
    "b": "bucket",
    "i": "in_format",
    "h": "host_addr",
    "H": "state_srv_addr",
    "l": "lambda_function",
    "O": "out_file",
    "P": "profiling",
}
_WHOLE_FLAGS: dict[str, tuple[str, int | None, int | None]] = {
    "f": ("num_frames", 1, None),
    "o": ("num_offset", 0, None),
    "n": ("num_parts", 1, None),
    "t": ("port_number", 0, MAX_PORT),  # 0: any free port (workers learn it from their event)
    "Y": ("quality_y", None, None),
    "S": ("quality_s", None, None),
    "T": ("state_srv_port", None, None),  # checked with -R by _check_relay_ports
    "R": ("state_srv_threads", 1, None),
    "K": ("keyframe_distance", 1, None),
    "X": ("overprovision", 0, None),
}
_SWITCHES = {"x": "run_xcenc", "u": "upload_states", "M": "hashed_names"}


def _compute_actor_number(thisAct: int, kfDist: int, numParts: int) -> tuple[int, int, int]:
    """mu's name for the rotating-goose order: ``(actor, group, place)`` of a connection."""
    return rotating_goose(thisAct, kfDist, numParts)


# -- options ---------------------------------------------------------------------------------


def _row(flag: str, text: str, default: Any = "", raw: bool = False) -> str:
    shown = str(default) if raw or default == "" else f"({default})"
    return f"  {flag:<16}{text:<48}{shown}".rstrip() + "\n"


def _joined(values: Any) -> str:
    return ",".join(str(v) for v in values)


# mu's flags in mu's order: (settings attribute or None for always, getopt letters, how the row
# reads, its text, how the default shows, a blank line before it).
# fmt: off
_FLAG_ROWS: list[tuple[str | None, str, str, str, Callable[[Any], Any], bool]] = [
    ("out_file", "O:", "-O oFile:", "timing log (JSON) output file", lambda d: repr(d.out_file), False),
    ("profiling", "P:", "-P pFile:", "cProfile data output file", lambda d: repr(d.profiling), False),
    (None, "n:", "-n nParts:", "launch nParts workers", lambda d: d.num_parts, True),
    ("overprovision", "X:", "-X nExtra:", "launch nExtra more; the first nParts work",
     lambda d: d.overprovision, False),
    ("num_list", "N:", "-N a,b,c,...", "run exactly the chunks numbered a, b, c, ...", lambda d: None, False),
    ("num_frames", "f:", "-f nFrames:", "number of frames in each chunk", lambda d: d.num_frames, False),
    ("num_offset", "o:", "-o nOffset:", "skip this many input chunks", lambda d: d.num_offset, False),
    ("quality_values", "q:", "-q qvals:", "quality values to try", lambda d: _joined(d.quality_values), True),
    ("run_xcenc", "x", "-x:", "run xc-enc", lambda d: "run vpxenc", False),
    ("quality_y", "Y:", "-Y y_ac_qi:", "Y quantizer", lambda d: d.quality_y, False),
    ("quality_s", "S:", "-S s_ac_qi:", "quantizer of the re-encoding passes", lambda d: d.quality_s, False),
    ("keyframe_distance", "K:", "-K kfDist:", "a keyframe every kfDist chunks", lambda d: d.keyframe_distance,
     False),
    ("upload_states", "u", "-u:", "upload prev.state and final.state", lambda d: d.upload_states, False),
    ("num_passes", "p:", "-p w,x,y,z:", "passes of phases 1-4 (each at least the minimum)",
     lambda d: f"{_joined(d.num_passes)}; min {_joined(d.min_passes)}", False),
    ("video_name", "v:", "-v vidName:", "video name", lambda d: repr(d.video_name), True),
    ("bucket", "b:", "-b bucket:", "S3 bucket holding the videos", lambda d: repr(d.bucket), False),
    ("in_format", "i:", "-i inFormat:", "input format ('png16', 'y4m_06', ...)", lambda d: repr(d.in_format),
     False),
    ("host_addr", "h:", "-h hostAddr:", "the address workers dial", lambda d: "auto", False),
    (None, "t:", "-t portNum:", "listen on portNum", lambda d: d.port_number, True),
    ("state_srv_addr", "H:", "-H stHostAddr:", "address workers dial for the relay",
     lambda d: d.state_srv_addr, False),
    ("state_srv_port", "T:", "-T stHostPort:", "relay port (run beside the coordinator)",
     lambda d: d.state_srv_port, False),
    ("state_srv_threads", "R:", "-R nThreads:", "relays on that many ports from -T on",
     lambda d: d.state_srv_threads, False),
    ("lambda_function", "l:", "-l fnName:", "Lambda function name(s), comma-separated",
     lambda d: repr(d.lambda_function), False),
    ("regions", "r:", "-r r1,r2,...:", "Lambda regions, comma-separated", lambda d: repr(_joined(d.regions)),
     False),
    ("kill_time", "m:", "-m timeout:", "seconds after it connects before a worker is ended",
     lambda d: d.kill_time, False),
    ("hashed_names", "M", "-M", "prefix S3 keys with a hash of their name", lambda d: d.hashed_names, False),
]
# fmt: on


def usage_str(defaults: Any) -> tuple[str, str]:
    """mu's usage text and getopt string for a settings class: a flag for every attribute it has.

    The getopt string is mu's, letter for letter and in mu's order.
    """
    text = f"Usage: {sys.argv[0]} [args ...]\n\n"
    if hasattr(defaults, "lambda_function"):
        text += "With --backend aws, AWS credentials must be set (AWS_ACCESS_KEY_ID ... or a profile).\n\n"
    text += _row("switch", "description", "default", raw=True) + _row("--", "--", "--", raw=True)
    text += _row("-U:", "show this message") + _row("-D:", "print every reply the states handle", "disabled")
    opts = "UD"
    for attr, letters, flag, description, default, gap in _FLAG_ROWS:
        if attr is None or hasattr(defaults, attr):
            text += ("\n" if gap else "") + _row(flag, description, default(defaults))
            opts += letters
    text += "\n" + _row("-c caCert:", "CA certificate file ($CA_CERT)", "None")
    text += _row("-s srvCert:", "server certificate file ($SRV_CERT)", "None")
    text += _row("-k srvKey:", "server key file ($SRV_KEY)", "None")
    text += "     (without them each job makes its own keys; 'mu genkeys DIR' writes long-lived ones)\n"
    opts += "c:s:k:"
    return text + "\n" + _project_help(defaults), opts


def to_numlist(arg: str, outlist: list[int]) -> None:
    """Parse ``"a, b,c"`` into ``outlist`` in place (mu's helper for -N and -q)."""
    values = [int(v) for v in arg.replace(" ", "").split(",") if v]
    del outlist[:]
    outlist.extend(values)


def _project_parser() -> argparse.ArgumentParser:
    from coordinator import cli

    parser = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
    cli.add_server_arguments(parser)
    return parser


def _long_actions(defaults: Any) -> list[argparse.Action]:
    """The project's long options this settings class may use (see ``_COVERED``)."""
    actions = []
    for action in _project_parser()._actions:
        if action.dest in _COVERED:
            attr = _COVERED[action.dest]
            if attr is None or hasattr(defaults, attr):
                continue
        actions.append(action)
    return actions


def _long_name(action: argparse.Action) -> str:
    return next(o for o in action.option_strings if o.startswith("--"))


def _project_help(defaults: Any) -> str:
    lines = ["This project's options:"]
    for action in _long_actions(defaults):
        name = _long_name(action)
        if action.choices:
            name += " {" + ",".join(str(c) for c in action.choices) + "}"
        elif action.nargs != 0:
            name += " " + action.dest.upper()
        text = (action.help or "").replace("%%", "%")
        lines.append(f"  {name:<28}{text}" if len(name) < 28 else f"  {name}\n  {'':<28}{text}")
    lines.append(f"  {'--command CMD':<28}the command a bare 'run:' runs (mu built it into each Lambda)")
    lines.append(f"  {'--allow-host-tmp':<28}with --no-sandbox: accept that the job's rm -rf /tmp/* empties "
                 "this machine's /tmp")  # fmt: skip
    lines.append(f"  {'--help':<28}show this message")
    return "\n".join(lines) + "\n"


def _usage_error(message: str, usage: str) -> NoReturn:
    print(f"ERROR: {message}\n\n{usage}", file=sys.stderr)
    raise SystemExit(2)


def _integer(flag: str, arg: str, usage: str, least: int | None = None, most: int | None = None) -> int:
    try:
        value = int(arg)
    except ValueError:
        _usage_error(f"-{flag} takes a whole number, got '{arg}'", usage)
    if most == MAX_PORT and not (least or 0) <= value <= most:
        free = " (0: any free port)" if least == 0 else ""
        _usage_error(f"-{flag} takes a port from {least} to {most}{free}, got {value}", usage)
    if least is not None and value < least:
        _usage_error(f"-{flag} must be at least {least}, got {value}", usage)
    if most is not None and value > most:
        _usage_error(f"-{flag} must be at most {most}, got {value}", usage)
    return value


def _check_relay_ports(server_info: Any, usage: str) -> None:
    """``-T``/``-R``: the job's relays listen on ports -T to -T+R-1. The states write -T into
    their ``connect:`` commands when each worker connects, so "any free port" (0) cannot work."""
    first = int(server_info.state_srv_port)
    threads = int(getattr(server_info, "state_srv_threads", 1) or 1)
    if not 1 <= first <= MAX_PORT:
        _usage_error(f"-T takes a port from 1 to {MAX_PORT}, got {first} (the job's states put it into "
                     "their connect: commands, so it must be known before the relay listens)",
                     usage)  # fmt: skip
    if first + threads - 1 > MAX_PORT:
        _usage_error(f"-T {first} with -R {threads} needs ports {first} to {first + threads - 1}, past "
                     f"{MAX_PORT}: lower -T or -R", usage)  # fmt: skip


def _numbers(flag: str, arg: str, usage: str) -> list[int]:
    values: list[int] = []
    try:
        to_numlist(arg, values)
    except ValueError:
        _usage_error(f"-{flag} takes comma-separated whole numbers, got '{arg}'", usage)
    if not values:
        _usage_error(f"-{flag} needs at least one number", usage)
    return values


def _apply(server_info: Any, flag: str, arg: str, usage: str) -> None:
    """One mu flag, with mu's meaning (see mu's libmu/server.py ``options``)."""
    if flag == "b" and bucket_problem(arg):
        empty = not arg.strip()
        _usage_error("-b needs the name of the S3 bucket the job reads and writes, got ''" if empty
                     else f"-b: {bucket_problem(arg)}", usage)  # fmt: skip
    if flag in _TEXT_FLAGS:
        setattr(server_info, _TEXT_FLAGS[flag], arg)
    elif flag in _WHOLE_FLAGS:
        name, least, most = _WHOLE_FLAGS[flag]
        setattr(server_info, name, _integer(flag, arg, usage, least, most))
    elif flag in _SWITCHES:
        setattr(server_info, _SWITCHES[flag], True)
    elif flag == "D":
        Defs.debug = True
    elif flag == "r":
        server_info.regions = arg.split(",")
    elif flag == "m":
        try:
            server_info.kill_time = int(arg) if arg.strip().isdigit() else float(arg)
        except ValueError:
            _usage_error(f"-m takes a number of seconds, got '{arg}'", usage)
        if server_info.kill_time <= 0:
            _usage_error(f"-m must be more than 0 seconds, got {arg}", usage)
    elif flag == "N":
        server_info.num_list = _numbers(flag, arg, usage)
        server_info.num_parts = len(server_info.num_list)
    elif flag == "q":
        server_info.quality_values = _numbers(flag, arg, usage)
        server_info.quality_valstring = "_".join(str(q) for q in server_info.quality_values)
    elif flag == "p":
        _passes(server_info, arg, usage)


def _passes(server_info: Any, arg: str, usage: str) -> None:
    parts = arg.replace(" ", "").split(",")
    try:
        passes = tuple(int(p) for p in parts)
    except ValueError:
        _usage_error(f"invalid argument to -p: '{arg}' (four whole numbers w,x,y,z)", usage)
    if len(passes) != 4:
        _usage_error(f"invalid argument to -p: '{arg}' (four whole numbers w,x,y,z)", usage)
    least = tuple(server_info.min_passes)
    if any(p < m for p, m in zip(passes, least, strict=True)):
        _usage_error(f"invalid number of passes {passes}: each must be at least {least}", usage)
    server_info.num_passes = passes
    server_info.tot_passes = sum(passes)


def options(server_info: Any) -> None:
    """mu's ``options``: read ``sys.argv`` into the settings class ``server_info``.

    Usage errors print the message and the usage, and exit with status 2.
    """
    from coordinator import cli

    usage, optstring = usage_str(server_info)
    actions = _long_actions(server_info)
    takes_value = {_long_name(a): a.nargs != 0 for a in actions}
    longopts = [name[2:] + ("=" if value else "") for name, value in takes_value.items()]
    longopts += ["command=", "allow-host-tmp", "help"]
    try:
        opts, rest = getopt.getopt(sys.argv[1:], optstring, longopts)
    except getopt.GetoptError as err:
        _usage_error(str(err), usage)
    if rest:
        _usage_error(f"extraneous arguments '{' '.join(rest)}'", usage)

    certs = [os.environ.get("CA_CERT"), os.environ.get("SRV_CERT"), os.environ.get("SRV_KEY")]
    long_argv: list[str] = []
    command = ""
    host_tmp = False
    given: set[str] = set()
    for opt, arg in opts:
        if opt == "--help" or opt == "-U":
            print(usage)
            raise SystemExit(0)
        if opt == "--command":
            command = arg
        elif opt == "--allow-host-tmp":
            host_tmp = True
        elif opt.startswith("--"):
            long_argv.append(f"{opt}={arg}" if takes_value[opt] else opt)
        elif opt[1] in "csk":
            certs["csk".index(opt[1])] = arg
        else:
            given.add(opt[1])
            _apply(server_info, opt[1], arg, usage)
    if "N" in given and given & {"n", "o"}:
        _usage_error("-N names the chunks to run; it cannot be combined with -n or -o", usage)

    parser = _project_parser()
    parser.prog = sys.argv[0]
    try:
        args = parser.parse_args(long_argv)
    except SystemExit:
        print(usage, file=sys.stderr)
        raise
    cli.check_backend(args)
    if args.no_sandbox and args.backend == "local" and not host_tmp:
        _usage_error(NO_SANDBOX_REFUSED, usage)
    if hasattr(server_info, "state_srv_port"):
        _check_relay_ports(server_info, usage)

    if hasattr(server_info, "quality_y") and hasattr(server_info, "quality_str"):
        qs = getattr(server_info, "quality_s", None)
        kf = getattr(server_info, "keyframe_distance", None)
        q_part = "x" if qs is None else str(qs)
        k_part = "" if kf is None else f"_k{kf}"
        server_info.quality_str = f"{server_info.quality_y}_{q_part}{k_part}"
    if hasattr(server_info, "regions") and not server_info.regions:
        _usage_error("the region list cannot be empty", usage)
    if hasattr(server_info, "num_passes"):
        if getattr(server_info, "keyframe_distance", None):
            server_info.num_passes = (1, server_info.keyframe_distance, 0, 0)
        elif server_info.num_passes[1] != 0:
            _usage_error("without -K (keyframe distance) phase two takes no passes; use -p w,0,y,z", usage)

    given_certs = [c for c in certs if c]
    if given_certs and len(given_certs) != 3:
        _usage_error("give all of -c caCert, -s srvCert and -k srvKey (or CA_CERT, SRV_CERT, SRV_KEY)", usage)
    if given_certs:
        for path in given_certs:
            if not os.path.isfile(path):
                _usage_error(f"cannot open SSL cert or key file '{path}'", usage)
        server_info.cacert, server_info.srvcrt, server_info.srvkey = (util.read_pem(p) for p in given_certs)

    _ensure_credentials(args, usage)
    _RUNS[id(server_info)] = _Run(args, usage, (certs[0], certs[1], certs[2]), command, None, given)


def _ensure_credentials(args: argparse.Namespace, usage: str) -> None:
    """mu's ``main()`` reads ``os.environ['AWS_ACCESS_KEY_ID']``. Fill the variables from the
    AWS configuration when they are unset (a profile, SSO, a role), or, for local workers
    against a local S3 (``--s3-endpoint``), with the test credentials such a server takes."""
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return
    if args.backend == "local" and args.s3_endpoint:
        from coordinator.local.locals3 import FAKE_CREDENTIALS

        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        return
    try:
        import botocore.session

        found = botocore.session.get_session().get_credentials()
    except Exception:  # a broken config file is the same as none here
        found = None
    if found is None:
        _usage_error(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile), "
            "or run local workers against a local S3 with --backend local --s3-endpoint URL",
            usage,
        )
    frozen = found.get_frozen_credentials()
    os.environ["AWS_ACCESS_KEY_ID"] = frozen.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
    if frozen.token:
        os.environ["AWS_SESSION_TOKEN"] = frozen.token


# -- launching and the main loop ---------------------------------------------------------------


def server_launch(server_info: Any, event: dict[str, Any], akid: str, secret: str) -> None:
    """Record the invocation event the job built; workers start in ``server_main_loop``.

    ``akid``/``secret`` are not used and never reach a worker: the launcher signs with the
    coordinator's own credentials, and workers get per-job keys, never the server key.
    """
    if not isinstance(event, dict):
        raise TypeError(f"server_launch needs the event as a dict, got {type(event).__name__}")
    run = _RUNS.get(id(server_info)) or _default_run(server_info)
    run.event = dict(event)
    _RUNS[id(server_info)] = run


def _default_run(server_info: Any) -> _Run:
    """For a job that skipped ``options``: every setting at its default."""
    usage, _ = usage_str(server_info)
    args = _project_parser().parse_args([])
    return _Run(args, usage)


def _job(constructor: Any, server_info: Any, run: _Run, args: argparse.Namespace | None = None) -> Job:
    """The job as the coordinator runs it; ``args`` are the coordinator's options once their
    region is settled (the options as parsed when not given)."""
    args = args or run.args
    event = dict(run.event or {})
    workers = int(server_info.num_parts)
    if workers < 1:
        _usage_error(f"the job asks for {workers} workers; -n must be at least 1", run.usage)
    order: list[int] | None = None
    groups: dict[int, int] | None = None
    kf = getattr(server_info, "keyframe_distance", None)
    if kf is not None:
        if int(kf) < 1:
            _usage_error(f"-K must be at least 1, got {kf}", run.usage)
        seats = [rotating_goose(rank, int(kf), workers) for rank in range(workers)]
        order = [actor for actor, _, _ in seats]
        if hasattr(server_info, "state_srv_threads"):
            groups = {actor: group for actor, group, _ in seats}
    relay_ports: tuple[int, ...] = ()
    if hasattr(server_info, "state_srv_port"):
        threads = int(getattr(server_info, "state_srv_threads", 1) or 1)
        relay_ports = tuple(int(server_info.state_srv_port) + k for k in range(threads))
    try:
        nonblock = int(event.get("nonblock") or 0)
    except (TypeError, ValueError):
        _usage_error(f"the job's event has nonblock={event.get('nonblock')!r}; it must be 0 or 1", run.usage)
    bucket = event.get("bucket") or getattr(server_info, "bucket", "") or ""
    name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else getattr(constructor, "__module__", "job")
    return Job(
        name=name.removeprefix("mu_job_") or "job",
        initial=constructor,
        workers=workers,
        command=run.command,
        bucket=str(bucket),
        region=str(event.get("region") or args.region or "us-east-1"),
        s3_endpoint=args.s3_endpoint,
        nonblock=nonblock,
        order=order,
        groups=groups,
        event={k: v for k, v in event.items() if k not in _EVENT_OWN},
        relay_ports=relay_ports,
        kill_state=getattr(server_info, "kill_state", None),
    )


# Class attributes through which one mu state class names the next ones it may build.
_NEXT_STATES = ("nextState", "loopState", "exitState", "consequentState", "alternativeState")


def bare_run_states(initial: Any) -> list[str]:
    """The state classes reachable from ``initial`` whose commands include a bare ``run:``,
    which runs the job's default command (in mu, the one built into the Lambda function).
    Only what the classes say statically is seen: a command made in ``__init__`` is not."""
    found: list[str] = []
    seen: set[type] = set()
    todo = [initial]
    while todo:
        cls = todo.pop()
        if not isinstance(cls, type) or cls in seen:
            continue
        seen.add(cls)
        entries = [*(getattr(cls, "commandlist", None) or []), getattr(cls, "command", None)]
        commands = [entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry for entry in entries]
        if any(isinstance(c, (str, bytes)) and c.strip() in ("run:", b"run:") for c in commands):
            found.append(cls.__name__)
        todo += [getattr(cls, attr, None) for attr in _NEXT_STATES]
        todo += list(getattr(cls, "state_constructors", None) or [])
    return sorted(found)


def _check_default_command(constructor: Any, run: _Run) -> None:
    """A job whose states send a bare ``run:`` needs ``--command``: said before anything starts,
    instead of as the first failure of every worker."""
    if run.command or (run.event or {}).get("command"):
        return
    states = bare_run_states(constructor)
    if states:
        _usage_error(
            f"this job's states send a bare 'run:' ({', '.join(states)}), which runs the job's default "
            "command; in mu that was the command built into its Lambda function (lambdaize.sh). "
            "Pass that command with --command 'CMD' (README, 'Porting a mu job', shows png2y4m's)",
            run.usage,
        )


def _coordinator_args(server_info: Any, run: _Run) -> argparse.Namespace:
    """The project's options, with the values of mu's flags put where the project keeps them."""
    args = argparse.Namespace(**vars(run.args))
    args.port = int(server_info.port_number)
    args.debug = bool(Defs.debug)
    args.ca_cert, args.server_cert, args.server_key = run.certs
    event = run.event or {}
    mapped = {
        "kill_time": "kill_time",
        "timing_log": "out_file",
        "cprofile": "profiling",
        "function": "lambda_function",
        "spares": "overprovision",
    }
    for dest, attr in mapped.items():
        if hasattr(server_info, attr):
            setattr(args, dest, getattr(server_info, attr))
    if args.spares is None:
        args.spares = 0
    if hasattr(server_info, "regions"):
        args.regions = ",".join(server_info.regions)
    if hasattr(server_info, "host_addr") or event.get("addr"):
        args.advertise = event.get("addr") or getattr(server_info, "host_addr", None)
    return args


def server_main_loop(states: list[Any], constructor: Any, server_info: Any) -> None:
    """Run the job: launch the workers, drive each through ``constructor``'s state machine.

    As in mu, ``states`` ends up holding each worker's final state (in connection order) and
    the job fails unless every worker ends in a TerminalState that is not an ErrorState; here
    the failure is a report and exit status 1 instead of an exception.
    """
    from coordinator import cli

    run = _RUNS.get(id(server_info)) or _default_run(server_info)
    _check_default_command(constructor, run)
    args = _coordinator_args(server_info, run)
    if args.backend == "aws" and hasattr(server_info, "state_srv_port"):
        where = getattr(server_info, "state_srv_addr", "")
        if where in ("127.0.0.1", "localhost", "::1", ""):
            _usage_error(f"with --backend aws, -H must be an address Lambda workers can reach, not '{where}'",
                         run.usage)  # fmt: skip
    jobs: list[Job] = []

    def make_job(settled: argparse.Namespace) -> Job:
        jobs.append(_job(constructor, server_info, run, settled))
        return jobs[-1]

    code, result = cli.execute(_MuUsage(run.usage), args, make_job, port_flags=("-t", "-T"))
    if result is not None:
        order = jobs[0].order or list(range(jobs[0].workers))
        states.extend(result.final_states[actor] for actor in order if actor in result.final_states)
    if code != 0:
        raise SystemExit(code)


class _MuUsage(argparse.ArgumentParser):
    """Reports a usage error the way ``options`` does: the message, then mu's usage text."""

    def __init__(self, usage: str) -> None:
        super().__init__(prog=sys.argv[0] if sys.argv else "job", add_help=False)
        self._usage_text = usage

    def error(self, message: str) -> NoReturn:
        _usage_error(message, self._usage_text)


def __getattr__(name: str) -> Any:
    if name == "setup_server_listen":
        raise AttributeError(
            "coordinator.libmu.server.setup_server_listen is mu's listening socket; here "
            "server_main_loop opens the coordinator's TLS port itself (-t)"
        )
    raise AttributeError(f"module 'coordinator.libmu.server' has no attribute '{name}'")
