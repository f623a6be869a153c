"""TLS settings shared by both ends, so a worker and its coordinator cannot drift apart."""

from __future__ import annotations

import os
import ssl
import tempfile

# Every per-job server certificate carries this name; the job's own CA is the trust anchor,
# so the name only has to be fixed, not resolvable (a Fargate task learns its IP late).
SERVER_NAME = "mu-coordinator"


def client_context(ca_pem: str, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """TLS 1.3 client that trusts only the job's CA and presents the worker certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=ca_pem)
    load_pem_chain(ctx, cert_pem, key_pem)
    return ctx


def load_pem_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl only loads keys from files: write them 0600 in a private directory, then remove them."""
    with tempfile.TemporaryDirectory(prefix="mu-tls-") as tmp:
        path = os.path.join(tmp, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cert_pem.rstrip("\n") + "\n" + key_pem)
        ctx.load_cert_chain(path)
