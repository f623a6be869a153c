from urllib.parse import quote

import pytest
from botocore.credentials import Credentials

from coordinator.launch import sigv4
from coordinator.launch.sigv4 import InvokeSigner, SigningError


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    "function", ["mu-worker", "arn:aws:lambda:us-east-1:123456789012:function:mu-worker:live"]
)
def test_fast_signature_agrees_with_botocores_full_pipeline(function, token):
    signer = InvokeSigner(Credentials("AKID", "SECRET", token), "us-east-1", "lambda.us-east-1.amazonaws.com")
    path = f"/2015-03-31/functions/{quote(function, safe='')}/invocations"
    signer.check(path, b'{"worker": 1, "x": "  spaced  "}')
    headers = signer.sign(path, b"{}")
    assert headers["X-Amz-Invocation-Type"] == "Event"
    assert ("X-Amz-Security-Token" in headers) == bool(token)


def test_disagreement_is_refused(monkeypatch):
    signer = InvokeSigner(Credentials("AKID", "SECRET"), "eu-west-1", "127.0.0.1:8443")
    monkeypatch.setattr(sigv4, "quote", lambda path, safe: path.upper())  # a canonicalisation bug
    with pytest.raises(SigningError, match="self-check failed"):
        signer.check("/2015-03-31/functions/f/invocations", b"{}")
