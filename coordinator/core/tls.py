"""Per-job keys and the coordinator's TLS contexts.

Each job makes its own CA, so a worker certificate is good for one job only and the server
key never leaves the coordinator (mu sent it to every worker).

With the user's own certificates (mu's ``-c/-s/-k``), the coordinator presents the user's
server certificate and workers check it against the user's CA, as in mu; but workers prove
who they are with a per-job client certificate from a per-job CA that only this coordinator
trusts, so the user's server key still stays here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lambda_worker.tlsconf import SERVER_NAME, client_context, load_pem_chain

JOB_VALIDITY = dt.timedelta(days=2)
CLOCK_SKEW = dt.timedelta(minutes=10)
KEY_FILES = ("ca_cert.pem", "server_cert.pem", "server_key.pem", "worker_cert.pem", "worker_key.pem")


@dataclass(frozen=True)
class JobKeys:
    ca_cert: str  # what workers verify the coordinator (and relay) against
    server_cert: str
    server_key: str
    worker_cert: str
    worker_key: str
    client_ca: str = ""  # what the coordinator verifies workers against; "" means ca_cert
    verify_name: bool = True  # workers check the server's name; user certificates name no fixed host

    def worker_tls(self) -> dict[str, Any]:
        """The ``tls`` field of an invocation event: never the server key."""
        tls: dict[str, Any] = {"ca": self.ca_cert, "cert": self.worker_cert, "key": self.worker_key}
        if not self.verify_name:
            tls["verify_name"] = False
        return tls


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mu"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])  # fmt: skip


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    validity: dt.timedelta,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        ).add_extension(x509.ExtendedKeyUsage([usage] if usage else []), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_job_keys(
    validity: dt.timedelta = JOB_VALIDITY, label: str = "job", hosts: tuple[str, ...] = ()
) -> JobKeys:
    """A fresh CA (ECDSA P-256), one server certificate and one shared worker certificate.

    ``hosts`` adds names or IP addresses to the server certificate, for HTTPS endpoints that
    clients verify by host name (the test and benchmark Lambda endpoints).
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"mu {label} CA")
    ca = _issue(f"mu {label} CA", ca_key, ca_name, ca_key, validity, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        SERVER_NAME, server_key, ca_name, ca_key, validity, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts
    )
    worker_key = ec.generate_private_key(ec.SECP256R1())
    worker = _issue("mu-worker", worker_key, ca_name, ca_key, validity, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    return JobKeys(pem(ca), pem(server), _pem_key(server_key), pem(worker), _pem_key(worker_key))


def server_context(keys: JobKeys, require_client: bool = True) -> ssl.SSLContext:
    """TLS 1.3 server that accepts only clients holding a certificate from the job's CA.

    ``require_client=False`` makes a plain HTTPS server (the local Lambda endpoints of the
    tests and benchmarks), which clients still verify against the job's CA.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=keys.client_ca or keys.ca_cert)
    load_pem_chain(ctx, keys.server_cert, keys.server_key)
    return ctx


def worker_context(keys: JobKeys) -> ssl.SSLContext:
    """What a worker uses; the coordinator needs it for tests and simulated workers."""
    ctx = client_context(keys.ca_cert, keys.worker_cert, keys.worker_key)
    ctx.check_hostname = keys.verify_name
    return ctx


def write_keys(keys: JobKeys, directory: str | os.PathLike[str]) -> list[Path]:
    """``mu genkeys``: write the five PEM files, private keys 0600, refusing to overwrite."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in KEY_FILES]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FileExistsError(
            f"refusing to overwrite {', '.join(existing)}; remove them or pick another directory"
        )
    values = (keys.ca_cert, keys.server_cert, keys.server_key, keys.worker_cert, keys.worker_key)
    for path, value in zip(paths, values, strict=True):
        mode = 0o600 if path.name.endswith("key.pem") else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(value)
    return paths


def read_keys(directory: str | os.PathLike[str]) -> JobKeys:
    """Load keys written by ``mu genkeys`` (or by mu's genkeys.sh with the same file names)."""
    folder = Path(directory)
    missing = [name for name in KEY_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; create them with 'mu genkeys {folder}'"
        )
    ca, server_cert, server_key, worker_cert, worker_key = ((folder / name).read_text() for name in KEY_FILES)
    return JobKeys(ca, server_cert, server_key, worker_cert, worker_key)


class CertificateError(ValueError):
    """A user-supplied certificate or key cannot be used; the message says which and why."""


def _read_pem(path: str, what: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CertificateError(f"cannot open {what} file '{path}': {exc.strerror}") from exc
    if "-----BEGIN " not in text:
        raise CertificateError(f"{what} file '{path}' holds no PEM block")
    return text


def user_keys(ca_path: str, cert_path: str, key_path: str, label: str = "job") -> JobKeys:
    """mu's ``-c caCert -s srvCert -k srvKey``: the coordinator shows the user's certificate.

    The files are checked now (the certificate must be issued by the CA and match the key),
    so a wrong file is one clear error instead of every worker failing its handshake.
    """
    ca_pem = _read_pem(ca_path, "CA certificate")
    cert_pem = _read_pem(cert_path, "server certificate")
    key_pem = _read_pem(key_path, "server key")
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError as exc:
        raise CertificateError(f"cannot read the certificates in '{ca_path}' / '{cert_path}': {exc}") from exc
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"server certificate '{cert_path}' is not issued by the CA in '{ca_path}'; "
            "workers would refuse it (pass the CA that signed it with -c)"
        ) from exc
    try:
        load_pem_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_pem, key_pem)
    except (ssl.SSLError, ValueError) as exc:
        why = f"server key '{key_path}' does not fit certificate '{cert_path}': {exc}"
        raise CertificateError(why) from exc
    own = make_job_keys(label=label)  # a per-job CA and worker certificate, for the client side
    return JobKeys(ca_pem, cert_pem, key_pem, own.worker_cert, own.worker_key, own.ca_cert, verify_name=False)
