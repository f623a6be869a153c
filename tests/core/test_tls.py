import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from coordinator.cli import main
from coordinator.core import tls
from tests.helpers import mu_style_certs


def test_job_keys_are_p256_and_name_the_coordinator(keys):
    server = x509.load_pem_x509_certificate(keys.server_cert.encode())
    assert server.public_key().curve.name == "secp256r1"
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [tls.SERVER_NAME]
    assert (
        "PRIVATE KEY" not in "".join(keys.worker_tls()["cert"])
        and keys.server_key not in keys.worker_tls().values()
    )


def test_server_context_requires_client_certificates(keys):
    ctx = tls.server_context(keys)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_genkeys_writes_private_keys_0600_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["genkeys", str(tmp_path / "k"), "--days", "30"]) == 0
    for name in tls.KEY_FILES:
        path = tmp_path / "k" / name
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith("key.pem") else 0o644)
    loaded = tls.read_keys(tmp_path / "k")
    tls.server_context(loaded)
    tls.worker_context(loaded)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # a DIR holding keys is a bad DIR: usage error
        main(["genkeys", str(tmp_path / "k")])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mu genkeys ") and "refusing to overwrite" in err


def test_read_keys_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mu genkeys"):
        tls.read_keys(tmp_path)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    """A real TLS handshake over a socket pair; returns the client certificate the server saw."""
    import socket
    import threading

    a, b = socket.socketpair()
    seen = {}

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                seen["peer"] = s.getpeercert()
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc
            a.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=tls.SERVER_NAME) as c:
            assert c.recv(2) == b"ok"
    finally:
        t.join(10)
    return str(seen["peer"]["subject"])


def test_user_certificates_are_shown_and_workers_use_a_per_job_client_certificate(tmp_path):
    ca, cert, key = mu_style_certs(tmp_path)
    keys = tls.user_keys(ca, cert, key)
    user_key = Path(key).read_text()
    assert keys.server_key == user_key and keys.ca_cert == Path(ca).read_text()
    event_tls = keys.worker_tls()
    assert user_key not in event_tls.values() and event_tls["verify_name"] is False
    assert event_tls["ca"] == keys.ca_cert and keys.client_ca != keys.ca_cert
    assert "mu-worker" in _handshake(tls.server_context(keys), tls.worker_context(keys))


def test_a_worker_certificate_from_another_job_is_refused_by_user_certificates(tmp_path):
    ca, cert, key = mu_style_certs(tmp_path)
    mine, other = tls.user_keys(ca, cert, key), tls.user_keys(ca, cert, key)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _handshake(tls.server_context(mine), tls.worker_context(other))


def test_unusable_user_certificates_are_clear_errors(tmp_path):
    ca, cert, key = mu_style_certs(tmp_path / "a")
    ca2, _, key2 = mu_style_certs(tmp_path / "b")
    with pytest.raises(tls.CertificateError, match="is not issued by the CA"):
        tls.user_keys(ca2, cert, key)
    with pytest.raises(tls.CertificateError, match="does not fit certificate"):
        tls.user_keys(ca, cert, key2)
    with pytest.raises(tls.CertificateError, match="cannot open CA certificate file"):
        tls.user_keys(str(tmp_path / "missing.pem"), cert, key)
    (tmp_path / "junk.pem").write_text("not a pem")
    with pytest.raises(tls.CertificateError, match="holds no PEM block"):
        tls.user_keys(ca, str(tmp_path / "junk.pem"), key)
