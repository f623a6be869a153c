import pytest

from lambda_worker.event import EventError, parse_event


def good(keys):
    return {"coordinator": "127.0.0.1:9000", "worker": 3, "job": "j", "tls": keys.worker_tls()}


def test_minimal_event_gets_defaults(keys):
    ev = parse_event(good(keys))
    assert (ev.host, ev.port, ev.worker, ev.nonblock, ev.idle_timeout) == ("127.0.0.1", 9000, 3, 0, 300.0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"coordinator": None}, "'coordinator' must be str"),
        ({"coordinator": "nohost"}, "HOST:PORT"),
        ({"coordinator": "h:99999"}, "HOST:PORT"),
        ({"worker": "3"}, "'worker' must be int"),
        ({"worker": True}, "'worker' must be int"),
        ({"worker": -1}, "'worker' must be >= 0"),
        ({"job": ""}, "'job' is empty"),
        ({"tls": "x"}, "'tls' must be dict"),
        ({"nonblock": 2}, "'nonblock' must be 0 or 1"),
        ({"idle_timeout": 0}, "'idle_timeout' must be > 0"),
    ],
)
def test_bad_fields_are_named(keys, change, match):
    with pytest.raises(EventError, match=match):
        parse_event({**good(keys), **change})


def test_missing_and_bad_pem(keys):
    ev = good(keys)
    del ev["job"]
    with pytest.raises(EventError, match="'job' is missing"):
        parse_event(ev)
    ev = good(keys)
    ev["tls"] = {**keys.worker_tls(), "key": "not a key"}
    with pytest.raises(EventError, match=r"'tls\.key' is not a PEM PRIVATE KEY"):
        parse_event(ev)
    ev["tls"] = {"ca": keys.ca_cert}
    with pytest.raises(EventError, match=r"'tls\.cert' is missing"):
        parse_event(ev)
    with pytest.raises(EventError, match="JSON object"):
        parse_event([1])


def test_mu_event_fields_with_mus_defaults(keys):
    """lambda_handler reads nonblock, expect_statefile, send_statefile, rm_tmpdir (1), bg_silent,
    minimal_recode, hash_s3keys with int(event.get(name, default)); fields it does not read
    (mode, addr, cacert ...) are ignored."""
    ev = parse_event({**good(keys), "mode": 1, "addr": None, "cacert": None, "port": 13579})
    assert ev.flags == {"nonblock": 0, "expect_statefile": 0, "send_statefile": 0, "rm_tmpdir": 1,
                        "bg_silent": 0, "minimal_recode": 0, "hash_s3keys": 0}  # fmt: skip
    ev = parse_event({**good(keys), "nonblock": 1, "bg_silent": True, "rm_tmpdir": 0, "expect_statefile": 1,
                      "infile": "in.y4m", "quality": 30, "args": ["-q", "-v"], "vars": "A=1"})  # fmt: skip
    assert (ev.nonblock, ev.flags["bg_silent"], ev.flags["rm_tmpdir"], ev.flags["expect_statefile"]) == (
        1,
        1,
        0,
        1,
    )
    assert ev.templates == {"infile": "in.y4m", "quality": "30", "args": ["-q", "-v"], "vars": ["A=1"]}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"bg_silent": 2}, "'bg_silent' must be 0 or 1"),
        ({"hash_s3keys": "1"}, "'hash_s3keys' must be 0 or 1"),
        ({"args": [1, 2]}, "'args' must be text or a list of text"),
        ({"infile": {"a": 1}}, "'infile' must be text"),
        ({"s3_endpoint": "localhost:9000"}, "'s3_endpoint' must be an http"),
        ({"s3_endpoint": "http://127.0.0.1:99999"}, "'s3_endpoint' has a bad port"),
    ],
)
def test_bad_mu_fields_are_named(keys, change, match):
    with pytest.raises(EventError, match=match):
        parse_event({**good(keys), **change})
