import ssl
import stat

import pytest
from cryptography import x509

from coordinator.cli import main
from coordinator.core import tls


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
    assert main(["genkeys", str(tmp_path / "k")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_read_keys_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mu genkeys"):
        tls.read_keys(tmp_path)
