"""SigV4 signing of Lambda Invoke requests, fast enough for thousands per second.

botocore's ``SigV4Auth`` computes every string to sign and every signature here. What is done
locally is only the canonical request, which for our single request shape (POST, no query,
five fixed headers) is one format string: botocore's generic path through ``AWSRequest``,
``email.message`` headers and URL parsing costs about 0.3 ms per request, which alone would
cap a launcher near 3,000 invocations/s. :meth:`InvokeSigner.check` compares the result with
botocore's full canonical request, and the launcher runs it before it sends anything.
"""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

REFRESH_SECONDS = 60.0


class SigningError(Exception):
    """The fast canonical request disagrees with botocore's; nothing may be sent."""


class InvokeSigner:
    def __init__(self, credentials: Any, region: str, host: str) -> None:
        self.credentials = credentials
        self.region = region
        self.host = host
        self._auth: Any = None
        self._auth_at = 0.0
        self._stamp_second = -1
        self._stamp = ""

    def _signer(self) -> Any:
        """A SigV4Auth over frozen credentials, renewed so role credentials can rotate."""
        from botocore.auth import SigV4Auth

        now = time.monotonic()
        if self._auth is None or now - self._auth_at > REFRESH_SECONDS:
            creds = self.credentials
            frozen = creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds
            self._auth = SigV4Auth(frozen, "lambda", self.region)
            self._auth_at = now
        return self._auth

    def _timestamp(self) -> str:
        second = int(time.time())
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._stamp

    def unsigned_headers(self, stamp: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Host": self.host,
            "X-Amz-Date": stamp,
            "X-Amz-Invocation-Type": "Event",
        }
        token = self._signer().credentials.token
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers

    def sign(self, path: str, body: bytes, stamp: str | None = None) -> dict[str, str]:
        """All headers of a signed ``POST path`` carrying ``body``."""
        auth = self._signer()
        stamp = stamp or self._timestamp()
        headers = self.unsigned_headers(stamp)
        names = sorted(k.lower() for k in headers)
        lower = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
        canonical = "\n".join(
            [
                "POST",
                quote(path, safe="/~"),
                "",
                "\n".join(f"{n}:{lower[n]}" for n in names) + "\n",
                ";".join(names),
                hashlib.sha256(body).hexdigest(),
            ]
        )
        request = SimpleNamespace(context={"timestamp": stamp})
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        scope = auth.credential_scope(request)
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={auth.credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def check(self, path: str, body: bytes) -> None:
        """Sign once both ways (ours and botocore's complete pipeline) and demand agreement."""
        from botocore.awsrequest import AWSRequest

        stamp = self._timestamp()
        ours = self.sign(path, body, stamp)
        auth = self._signer()
        unsigned = self.unsigned_headers(stamp)
        request = AWSRequest(
            method="POST",
            url=f"https://{self.host}{path}",
            data=body,
            headers={k: v for k, v in unsigned.items() if k != "Host"},
        )
        request.context["timestamp"] = stamp
        theirs = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if not ours["Authorization"].endswith(f"Signature={theirs}"):
            raise SigningError(
                f"SigV4 self-check failed for {path} on {self.host}: this botocore version canonicalises "
                "requests differently; please report it with 'pip show botocore'"
            )
