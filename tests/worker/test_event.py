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
