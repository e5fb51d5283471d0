"""Certificates for trying TLS on one machine: a local CA, a server certificate for localhost (and
any names given) and client certificates for mTLS, all signed by that CA.

For development only: the CA key sits next to the certificates, unencrypted (owner-only files).
A CA already in the folder is reused, so more client certificates can be added to it later.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agenthub.sdk.errors import InvalidRequest

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
VALID_FOR = datetime.timedelta(days=365)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class DevCerts:
    """Where `make_dev_certs` wrote each file."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client: str
    hosts: tuple[str, ...]


def make_dev_certs(folder: Path, hosts: tuple[str, ...] = (), client: str = "dev-client") -> DevCerts:
    """Write (or reuse) the CA in `folder`, then a server certificate for localhost and `hosts` and
    a client certificate whose CN is `client`; the paths of every file."""
    if not _NAME.match(client):
        raise InvalidRequest(f"client name {client!r}: use letters, digits, '.', '_' or '-'")
    names = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca.key"
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(ca_key, PrivateKey):
            raise InvalidRequest(f"{ca_key_path} is not a key made by `agenthub certs dev`")
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca(ca_key)
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(ca_key_path, ca_key)
    server = folder / "server"
    _write_pair(server, *_issue(ca_cert, ca_key, names[0], ExtendedKeyUsageOID.SERVER_AUTH, names))
    holder = folder / f"client-{client}"
    _write_pair(holder, *_issue(ca_cert, ca_key, client, ExtendedKeyUsageOID.CLIENT_AUTH, ()))
    return DevCerts(
        ca_path, ca_key_path, server.with_suffix(".pem"), server.with_suffix(".key"),
        holder.with_suffix(".pem"), holder.with_suffix(".key"), client, names,
    )  # fmt: skip


def _ca(key: PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AgentHub dev CA")])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue(
    ca: x509.Certificate, ca_key: PrivateKey, cn: str, purpose: x509.ObjectIdentifier, hosts: tuple[str, ...]
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf certificate for `cn`, for one purpose (server or client auth), naming `hosts` in its SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_pair(stem: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    """`stem`.pem and `stem`.key."""
    stem.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(stem.with_suffix(".key"), key)


def _write_key(path: Path, key: PrivateKey) -> None:
    """A private key, readable by its owner only."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
