import pytest

from lambda_worker.wire import Decoder, ProtocolError, encode, meta_message, quote


def test_encode_is_mu_framing():
    assert encode("OK:HELLO") == b"000000000008 OK:HELLO"
    assert encode(b"") == b"000000000000 "


def test_decoder_handles_any_split_and_binary_bodies():
    bodies = [b"set:a:1", b"", b"\x00\xff" * 1000, b"retrieve:k\x00f"]
    stream = b"".join(encode(b) for b in bodies)
    for step in (1, 2, 7, 13, 100, len(stream)):
        dec = Decoder()
        got = []
        for i in range(0, len(stream), step):
            got.extend(dec.feed(stream[i : i + step]))
        assert got == bodies
        assert dec.buffered == 0


def test_over_long_frame_is_rejected_before_buffering():
    dec = Decoder(max_frame=1024)
    with pytest.raises(ProtocolError, match="exceeds the maximum of 1024"):
        dec.feed(b"%012d " % 1025)
    assert Decoder(max_frame=1024).feed(encode(b"x" * 1024)) == [b"x" * 1024]


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n", b"00000000001x body", b"000000000001-x"])
def test_garbage_header_is_a_protocol_error(garbage):
    with pytest.raises(ProtocolError, match="12 ASCII digits"):
        Decoder().feed(garbage)


def test_garbage_is_caught_before_a_full_header_arrives():
    with pytest.raises(ProtocolError):
        Decoder().feed(b"\x16\x03")


def test_meta_is_taken_out_of_a_connections_messages():
    """Project rule: the worker's META message is the server's, never a reply a state sees."""
    meta = meta_message({"worker": 3, "python": "3.11.7", "deadline_ms": 900000})
    assert meta == b'META:{"deadline_ms":900000,"python":"3.11.7","worker":3}'
    replies = [b"OK:HELLO", b"INFO:x:1", b"OK:GETI(x)"]
    fields: dict = {}
    assert Decoder(meta=fields).feed(b"".join(map(encode, replies))) == replies and fields == {}
    read = [b"OK:HELLO", meta, b"INFO:x:1", b"META:[1]", b"OK:GETI(x)"]
    got = Decoder(meta=fields).feed(b"".join(map(encode, read)))
    assert got == replies
    assert fields == {"worker": 3, "python": "3.11.7", "deadline_ms": 900000, "unreadable": "'META:[1]'"}


def test_quote_shows_bytes_as_text():
    assert quote(b"connect:127.0.0.1") == "'connect:127.0.0.1'"
    assert quote(b"a\x00\xffb") == "'a\\x00\ufffdb'"
    assert quote(b"x" * 10, 4) == "'xxxx...'"
