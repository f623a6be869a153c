"""The worker's command logic, sans-I/O, pinned rule by rule against mu's worker.

Each test is named after the behaviour of mu's ``libmu/handler.py`` or
``lambda_function_template.py`` it pins (function names in the docstrings); tests of this
project's own rules say so.
"""

import hashlib
import json

import pytest

from lambda_worker import commands as c
from lambda_worker.commands import CommandError
from lambda_worker.event import parse_event

TMP = "/tmp/lambda_x"


@pytest.fixture
def event(keys):
    def make(**extra):
        base = {"coordinator": "127.0.0.1:9", "worker": 0, "job": "j", "tls": keys.worker_tls(),
                "bucket": "bkt", "command": "tool ##INFILE##"}  # fmt: skip
        return parse_event({**base, **extra})

    return make


@pytest.fixture
def vals(event):
    return c.default_vals(event())


def run_cmd(vals, arg=b"", templates=None):
    return c.command_for(vals, templates or {}, arg, TMP)


# -- variables: handler._do_set / _do_get ---------------------------------------------------


def test_fresh_worker_has_mus_flags_with_mus_defaults_and_run_iter_0(event):
    """lambda_handler: nonblock, expect_statefile, send_statefile, bg_silent, minimal_recode,
    hash_s3keys default 0, rm_tmpdir 1, run_iter 0; bucket and region from the event."""
    v = c.default_vals(event())
    assert {k: v[k] for k in ("nonblock", "expect_statefile", "send_statefile", "rm_tmpdir", "bg_silent",
                              "minimal_recode", "hash_s3keys", "run_iter")} == {
        "nonblock": 0, "expect_statefile": 0, "send_statefile": 0, "rm_tmpdir": 1, "bg_silent": 0,
        "minimal_recode": 0, "hash_s3keys": 0, "run_iter": 0}  # fmt: skip
    assert (v["bucket"], v["region"]) == ("bkt", "us-east-1")
    v = c.default_vals(event(expect_statefile=1, bg_silent=True, rm_tmpdir=0))
    assert (v["expect_statefile"], v["bg_silent"], v["rm_tmpdir"]) == (1, 1, 0)


def test_set_stores_text_and_seti_an_integer(vals):
    """_do_set: split once on ':' (the value may hold colons); replies OK:SET(K) / OK:SETI(K)."""
    assert c.do_set(vals, b"name:a:b") == b"OK:SET(name)"
    assert vals["name"] == "a:b"
    assert c.do_seti(vals, b"n:42") == b"OK:SETI(n)"
    assert vals["n"] == 42
    assert c.do_set(vals, b"empty:") == b"OK:SET(empty)" and vals["empty"] == ""


@pytest.mark.parametrize(("fn", "arg"), [(c.do_set, b"novalue"), (c.do_set, b":v"), (c.do_seti, b"n:abc")])
def test_malformed_set_and_non_integer_seti_fail(vals, fn, arg):
    """_do_set: no ':' or an empty key fails; seti of a non-integer fails."""
    with pytest.raises(CommandError):
        fn(vals, arg)


def test_get_of_an_unset_variable_fails_as_mu_words_it(vals):
    """_do_get: FAIL(no such variable NAME), for get: and geti: alike."""
    with pytest.raises(CommandError, match=r"^no such variable missing$"):
        c.do_get(vals, b"missing")
    with pytest.raises(CommandError, match=r"^no such variable missing$"):
        c.do_geti(vals, b"missing")


def test_geti_sends_info_then_ok(vals):
    """_do_get(get_info=True): INFO:K:V, then OK:GETI(K)."""
    vals["n"] = 42
    assert c.do_get(vals, b"n") == b"OK:GET(42)"
    assert c.do_geti(vals, b"n") == [b"INFO:n:42", b"OK:GETI(n)"]


def test_dump_vals_is_json_here(vals):
    """Project rule (mu sends str(dict)): OK:DUMP_VALS: + JSON, readable by any coordinator."""
    vals["n"] = 7
    dumped = json.loads(c.do_dump_vals(vals, b"").removeprefix(b"OK:DUMP_VALS:"))
    assert dumped["n"] == 7 and dumped["bucket"] == "bkt"


def test_echo_returns_the_argument(vals):
    assert c.do_echo(vals, b"hi:there") == b"OK:ECHO(hi:there)"


def test_commands_are_matched_by_their_name_and_colon():
    """handle_message: a command is recognised by its prefix 'name:'; 'quit' alone is no command."""
    assert c.parse_command(b"retrieve:k\x00/f") == ("retrieve", b"k\x00/f")
    assert c.parse_command(b"quit:") == ("quit", b"")
    assert c.parse_command(b"quit") == ("", b"quit")
    assert str(c.unknown_command(b"quit")) == "no such command 'quit'"


# -- run: make_cmdstring and do_run -----------------------------------------------------------


def test_run_replies_ok_retval_for_every_exit_status():
    """do_run: 'OK:RETVAL(%d):OUTPUT(%s):COMMAND(%s)' whatever the status; the job decides."""
    assert c.run_reply("true", 0, b"hi\n") == b"OK:RETVAL(0):OUTPUT(hi\n):COMMAND(true)"
    assert c.run_reply("false", 3, b"") == b"OK:RETVAL(3):OUTPUT():COMMAND(false)"
    assert c.run_reply("kill -9 $$", -9, b"") == b"OK:RETVAL(-9):OUTPUT():COMMAND(kill -9 $$)"


def test_output_keeps_a_bounded_tail():
    """Project rule (mu kept all of it): the last OUTPUT_TAIL bytes, with how much was left out."""
    tail = c.OutputTail(limit=10)
    for _ in range(1000):
        tail.feed(b"0123456789abcdef")
    assert tail.value() == b"[... 15990 bytes of output omitted ...]\n" + b"6789abcdef"
    short = c.OutputTail()
    short.feed(b"all of it")
    assert short.value() == b"all of it"


def test_run_without_a_command_runs_the_functions_cmdstring(vals):
    """make_cmdstring: an empty run: runs Defs.cmdstring (here the event's 'command')."""
    vals["cmdinfile"] = "in.png"
    assert run_cmd(vals) == "tool in.png"
    assert run_cmd(vals, b"echo ##TMPDIR##") == f"echo {TMP}"
    vals["command"] = ""
    with pytest.raises(CommandError, match=r"runs the job.s default command, and this job has none"):
        run_cmd(vals)


def test_cmdvars_go_before_the_command_and_cmdargs_after(vals):
    """make_cmdstring: ' '.join(vars) + ' ' + command, then command + ' ' + ' '.join(args)."""
    vals.update(cmdvars="A=1", cmdargs="--fast")
    assert run_cmd(vals, b"x") == "A=1 x --fast"
    vals.update(cmdvars=None, cmdargs=None)
    assert run_cmd(vals, b"x", {"vars": ["A=1", "B=2"], "args": ["-q", "-v"]}) == "A=1 B=2 x -q -v"


def test_a_cmd_variable_wins_over_the_event_value(vals):
    """vals_lookup: vals['cmd' + name] if set, else event[name]."""
    templates = {"quality": "30", "infile": "event.in", "outfile": "event.out"}
    assert run_cmd(vals, b"q=##QUALITY## ##INFILE## ##OUTFILE##", templates) == "q=30 event.in event.out"
    vals.update(cmdquality="--s-ac-qi 5", cmdinfile="var.in")
    assert (
        run_cmd(vals, b"q=##QUALITY## ##INFILE## ##OUTFILE##", templates) == "q=--s-ac-qi 5 var.in event.out"
    )


def test_an_empty_quality_still_replaces_the_placeholder(vals):
    """make_cmdstring: only None skips a replacement; xcenc sends set:cmdquality: with '' on some passes."""
    vals["cmdquality"] = ""
    assert run_cmd(vals, b"./xc-enc ##QUALITY## -i y4m") == "./xc-enc  -i y4m"


def test_tmpdir_is_replaced_last_so_other_values_may_use_it(vals):
    """make_cmdstring: '##TMPDIR##' last, 'because other replacements might refer to ##TMPDIR##'."""
    vals.update(cmdinfile="##TMPDIR##/in.png", cmdoutfile="##TMPDIR##/out.y4m")
    assert run_cmd(vals, b"t -o ##OUTFILE## ##INFILE##") == f"t -o {TMP}/out.y4m {TMP}/in.png"


def test_unexpanded_placeholder_is_a_fail_naming_it(vals):
    """Project rule: mu left '##QUALITY##' in the command, where the shell took it for a comment."""
    with pytest.raises(CommandError, match=r"##QUALITY## is not expanded: set:cmdquality"):
        run_cmd(vals, b"./xc-enc ##QUALITY## in.y4m")
    with pytest.raises(CommandError, match=r"##INFILE## is not expanded"):
        run_cmd(vals)
    with pytest.raises(CommandError, match=r"##FOO## is not expanded: it is not one of mu's placeholders"):
        run_cmd(vals, b"echo ##FOO##")
    assert run_cmd(vals, b"f=a/b; echo ${f##*/} '##'") == "f=a/b; echo ${f##*/} '##'"  # shell, not ours


def test_a_nul_byte_in_a_command_fails_instead_of_killing_the_worker(vals):
    with pytest.raises(CommandError, match="NUL byte"):
        run_cmd(vals, b"echo a\x00b")
    with pytest.raises(CommandError, match="not UTF-8"):
        run_cmd(vals, b"echo \xff")


def test_instate_templates_are_empty_without_expect_statefile_or_before_the_first_iteration(vals):
    """make_cmdstring: both become '' unless run_iter > 0 and expect_statefile."""
    cmd = b"##INSTATEWAIT##./xc-enc ##INSTATESWITCH## in.y4m"
    vals["run_iter"] = 3
    assert run_cmd(vals, cmd) == "./xc-enc  in.y4m"
    vals.update(run_iter=0, expect_statefile=1)
    assert run_cmd(vals, cmd) == "./xc-enc  in.y4m"


def test_instatewait_polls_for_the_previous_state_and_instateswitch_names_it(vals):
    """make_cmdstring at run_iter 1: wait for 0.state; '-r -I 0.state -p prev.ivf'."""
    vals.update(run_iter=1, expect_statefile=1)
    got = run_cmd(vals, b"##INSTATEWAIT##./xc-enc ##INSTATESWITCH## in.y4m")
    wait = f'( while [ ! -f "{TMP}/0.state" ]; do sleep 0.025; done; echo "hi" ) | '
    assert got == f'{wait}./xc-enc -r -I "{TMP}/0.state" -p "{TMP}/prev.ivf" in.y4m'


def test_instateswitch_adds_the_state_two_passes_back_or_0_with_minimal_recode(vals):
    """make_cmdstring at run_iter > 1: '-S (run_iter-2).state'; with minimal_recode '-S 0.state'."""
    vals.update(run_iter=3, expect_statefile=1)
    switch = f'-r -I "{TMP}/2.state" -p "{TMP}/prev.ivf"'
    assert run_cmd(vals, b"x ##INSTATESWITCH##") == f'x {switch} -S "{TMP}/1.state"'
    vals["minimal_recode"] = 1
    assert run_cmd(vals, b"x ##INSTATESWITCH##") == f'x {switch} -S "{TMP}/0.state"'


def test_run_iter_set_as_text_is_read_as_a_number(vals):
    """xcenc sends seti:run_iter:N; set: gives text, which must still be a number."""
    vals.update(run_iter="2", expect_statefile="1")
    assert '-I "/tmp/lambda_x/1.state"' in run_cmd(vals, b"x ##INSTATESWITCH##")
    vals["run_iter"] = "two"
    with pytest.raises(CommandError, match="'run_iter' must be an integer"):
        run_cmd(vals, b"x ##INSTATESWITCH##")


def test_flags_set_as_text_zero_are_off(vals):
    """Project rule: set:nonblock:0 stores '0', which is off here (in mu any non-empty text was on)."""
    assert not c.flag_on("0") and not c.flag_on("") and not c.flag_on(0) and not c.flag_on(None)
    assert c.flag_on("1") and c.flag_on(1) and c.flag_on("yes")


# -- retrieve: / upload: make_urstring, do_retrieve, do_upload -------------------------------------


def test_transfer_from_variables_or_the_inline_key_nul_file(vals):
    """make_urstring: 'KEY\\0FILE' inline, else inkey/targfile (retrieve) or outkey/fromfile (upload)."""
    with pytest.raises(CommandError, match="'inkey' is not set"):
        c.transfer_for("retrieve", vals, b"", TMP)
    vals.update(inkey="a/b.png", targfile="##TMPDIR##/b.png")
    assert c.transfer_for("retrieve", vals, b"", TMP) == c.Transfer(
        "retrieve", "bkt", "a/b.png", f"{TMP}/b.png"
    )
    assert c.transfer_for("upload", vals, b"k\x00##TMPDIR##/f", TMP) == c.Transfer(
        "upload", "bkt", "k", f"{TMP}/f"
    )
    with pytest.raises(CommandError, match="inline form"):
        c.transfer_for("upload", vals, b"no-nul", TMP)
    with pytest.raises(CommandError, match="NUL byte"):
        c.transfer_for("retrieve", vals, b"k\x00f\x00g", TMP)
    vals["bucket"] = ""
    with pytest.raises(CommandError, match="no bucket: the job named none"):
        c.transfer_for("upload", vals, b"k\x00f", TMP)


def test_only_the_file_name_gets_tmpdir_the_key_is_used_as_given(vals):
    """make_urstring replaces ##TMPDIR## in the file name only."""
    t = c.transfer_for("retrieve", vals, b"##TMPDIR##/k\x00##TMPDIR##/f", TMP)
    assert (t.key, t.path) == ("##TMPDIR##/k", f"{TMP}/f")


def test_retrieving_and_uploading_replies_name_bucket_key_and_file(vals):
    """do_retrieve: OK:RETRIEVING(b/k->file) then OK:RETRIEVE(b/k); do_upload: OK:UPLOADING(file->b/k)
    then OK:UPLOAD(b/k)."""
    r = c.transfer_for("retrieve", vals, b"v/1.png\x00##TMPDIR##/1.png", TMP)
    assert (r.pending(), r.done()) == (
        f"OK:RETRIEVING(bkt/v/1.png->{TMP}/1.png)".encode(),
        b"OK:RETRIEVE(bkt/v/1.png)",
    )
    u = c.transfer_for("upload", vals, b"v/1.y4m\x00##TMPDIR##/1.y4m", TMP)
    assert (u.pending(), u.done()) == (
        f"OK:UPLOADING({TMP}/1.y4m->bkt/v/1.y4m)".encode(),
        b"OK:UPLOAD(bkt/v/1.y4m)",
    )


def test_hash_s3keys_prefixes_four_hex_digits_of_the_md5_of_the_last_key_component(vals):
    """make_urstring with hash_s3keys: '%s-%s' % (md5(key.split('/')[-1]).hexdigest()[0:4], key)."""
    vals["hash_s3keys"] = 1
    t = c.transfer_for("upload", vals, b"out_30/00000007.ivf\x00##TMPDIR##/o.ivf", TMP)
    expected = hashlib.md5(b"00000007.ivf").hexdigest()[:4]
    assert t.key == f"{expected}-out_30/00000007.ivf"
    assert t.done() == f"OK:UPLOAD(bkt/{expected}-out_30/00000007.ivf)".encode()


# -- connect: and the peer ---------------------------------------------------------------------


def test_connect_takes_host_port_and_the_message_to_send_first():
    """do_connect: msg.split(':', 2) -> host, int(port), tosend (sent only if non-empty)."""
    assert c.connect_for(b"10.0.0.1:13337:HELLO_STATE:U:00000003:4") == c.Connect(
        "10.0.0.1", 13337, b"HELLO_STATE:U:00000003:4"
    )
    assert c.connect_for(b"h:1:") == c.Connect("h", 1, b"")


@pytest.mark.parametrize("arg", [b"h:1", b":1:x", b"h:x:y", b"h:0:x", b"h:99999999:x", b"\xff\xfe:1:x"])
def test_a_bad_connect_fails_instead_of_killing_the_worker(arg):
    with pytest.raises(CommandError):
        c.connect_for(arg)


def test_peer_messages_state_file_and_anything_else():
    """get_input_state: 'STATE(n):' + zlib data becomes n.state (not reported, as in mu); the
    project's FILE:NAME: is stored and reported; anything else is forwarded as INFO, capped."""
    assert c.peer_message(b"STATE(12):\x78\x9c") == c.PeerState(12, b"\x78\x9c")
    assert c.peer_message(b"FILE:state.3:a:b") == c.PeerFile("state.3", b"a:b")
    assert c.peer_message(b"hello") == c.PeerReport(b"INFO:peer:hello")
    big = c.peer_message(b"x" * (c.PEER_INFO_LIMIT + 10))
    assert isinstance(big, c.PeerReport) and big.line.endswith(b"x[... 10 more bytes]")
    assert len(big.line) < c.PEER_INFO_LIMIT + 40


@pytest.mark.parametrize(
    "msg",
    [b"FILE:a\x00b:x", b"FILE:" + b"n" * 300 + b":x", b"FILE:..:x", b"FILE:.hidden:x", b"FILE:a/b:x",
     b"FILE:noseparator", b"FILE:\xff:x", b"STATE(x):d", b"STATE(1)", b"STATE(99999999999):d"],
)  # fmt: skip
def test_hostile_peer_messages_become_a_peer_error(msg):
    got = c.peer_message(msg)
    assert isinstance(got, c.PeerReport) and got.line.startswith(b"INFO:peer_error:")


def test_send_refuses_unsafe_names_and_files_over_the_frame_limit():
    assert c.peer_name("state.0", "send") == "state.0"
    for bad in ("", "..", ".x", "a/b", "a b", "x" * 129, "é"):
        with pytest.raises(CommandError, match="not allowed"):
            c.peer_name(bad, "send")
    c.check_frame(100, 100, "f")
    with pytest.raises(CommandError, match="over the 100-byte message limit"):
        c.check_frame(101, 100, "f")


# -- finished_run: the hand-off after xc-enc ----------------------------------------------------


@pytest.mark.parametrize("tool", ["./xc-enc -i y4m", "./xc-dump o.ivf f.state", "xc-terminate-chunk a b"])
def test_handoff_follows_a_run_of_xc_enc_xc_dump_or_xc_terminate_chunk(vals, tool):
    """finished_run: only for commands naming one of the three tools."""
    assert c.handoff_for(tool, vals) == c.Handoff(unlink=None, send=None)
    assert c.handoff_for("./vpxenc -o out.ivf", vals) is None


def test_handoff_drops_the_state_two_back_and_sends_only_with_send_statefile(vals):
    """finished_run: unlink (run_iter-2).state when run_iter > 1; send STATE(run_iter) with send_statefile."""
    vals.update(run_iter=3, send_statefile=1)
    assert c.handoff_for("./xc-enc", vals) == c.Handoff(unlink="1.state", send=3)
    vals.update(run_iter=1, send_statefile="0")
    assert c.handoff_for("./xc-enc", vals) == c.Handoff(unlink=None, send=None)


def test_a_program_the_shell_cannot_find_is_named_with_what_to_do():
    dash = b"/bin/sh: 1: ./y4m2png: not found\n"
    hint = c.missing_program_hint(dash, "/var/task", ["png2y4m", "scanstep"])
    assert hint.startswith(b"[worker: exit status 127: y4m2png is not among this worker's programs")
    assert b"(in /var/task: png2y4m, scanstep)" in hint
    assert b"binaries/bin" in hint and b"MU_BIN_DIR" in hint
    bash = b"bash: line 1: ffmpeg: command not found\n"
    assert b": ffmpeg is not among" in c.missing_program_hint(bash, "/b", [])
    unknown = c.missing_program_hint(b"exit 127 by hand\n", None, [])
    assert b"a program the command names is not among this worker's programs (none: no binaries" in unknown
