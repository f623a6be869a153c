import json

import pytest

from lambda_worker import commands as c
from lambda_worker.commands import CommandError


def vals():
    return c.default_vals(bucket="bkt", region="us-east-1", command="tool ##INFILE##", nonblock=0)


def test_parse_keeps_binary_argument():
    assert c.parse_command(b"retrieve:k\x00/f") == ("retrieve", b"k\x00/f")
    assert c.parse_command(b"quit:") == ("quit", b"")
    assert c.parse_command(b"quit") == ("quit", b"")


def test_set_get_seti_geti_dump():
    v = vals()
    assert c.do_set(v, b"name:a:b") == b"OK:SET(name)"
    assert v["name"] == "a:b"
    assert c.do_get(v, b"name") == b"OK:GET(a:b)"
    assert c.do_seti(v, b"n:42") == b"OK:SETI(n)"
    assert v["n"] == 42
    assert c.do_geti(v, b"n") == [b"INFO:n:42", b"OK:GETI(n)"]
    dumped = json.loads(c.do_dump_vals(v, b"").removeprefix(b"OK:DUMP_VALS:"))
    assert dumped["n"] == 42 and dumped["bucket"] == "bkt"


@pytest.mark.parametrize(
    ("fn", "arg", "match"),
    [
        (c.do_set, b"novalue", "set needs 'set:KEY:VALUE'"),
        (c.do_set, b":v", "set needs"),
        (c.do_seti, b"n:abc", "value 'abc' for 'n' is not an integer"),
        (c.do_get, b"missing", "no variable 'missing'"),
        (c.do_geti, b"missing", "no variable 'missing'"),
    ],
)
def test_bad_variable_commands(fn, arg, match):
    with pytest.raises(CommandError, match=match):
        fn(vals(), arg)


def test_substitution_order_lets_files_use_tmpdir():
    v = vals()
    v["cmdinfile"] = "##TMPDIR##/in.png"
    v["cmdoutfile"] = "##TMPDIR##/out.y4m"
    assert c.substitute("t -o ##OUTFILE## ##INFILE##", v, "/tmp/w") == "t -o /tmp/w/out.y4m /tmp/w/in.png"
    with pytest.raises(CommandError, match="'cmdinfile' is not set"):
        c.substitute("##INFILE##", vals(), "/x")


def test_transfer_from_vars_and_inline():
    v = vals()
    with pytest.raises(CommandError, match="'inkey' is not set"):
        c.transfer_for("retrieve", v, b"", "/t")
    v.update(inkey="a/b.png", targfile="##TMPDIR##/b.png")
    assert c.transfer_for("retrieve", v, b"", "/t") == c.Transfer("bkt", "a/b.png", "/t/b.png")
    assert c.transfer_for("upload", v, b"k\x00##TMPDIR##/f", "/t") == c.Transfer("bkt", "k", "/t/f")
    with pytest.raises(CommandError, match="inline form"):
        c.transfer_for("upload", v, b"no-nul", "/t")
    with pytest.raises(CommandError, match="holds a NUL byte"):  # found by the fuzz test
        c.transfer_for("retrieve", v, b"k\x00f\x00g", "/t")

    v["bucket"] = ""
    with pytest.raises(CommandError, match="'bucket' is not set"):
        c.transfer_for("upload", v, b"k\x00f", "/t")


def test_run_reply_and_failure():
    assert c.run_reply("true", 0, b"hi\n") == b"OK:RETVAL(0):OUTPUT(hi\n):COMMAND(true)"
    with pytest.raises(CommandError, match=r"RETVAL\(3\)"):
        c.run_reply("false", 3, b"")
    long = c.run_reply("x", 0, b"a" * (c.OUTPUT_LIMIT * 2))
    assert len(long) < c.OUTPUT_LIMIT + 100


def test_command_for_uses_job_default():
    v = vals()
    v["cmdinfile"] = "in"
    assert c.command_for(v, b"", "/t") == "tool in"
    assert c.command_for(v, b"echo ##TMPDIR##", "/t") == "echo /t"
    v["command"] = ""
    with pytest.raises(CommandError, match="no default command"):
        c.command_for(v, b"", "/t")
