"""A throwaway certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1/localhost and a
client certificate, written as PEM files (the same files an operator makes with openssl, docs/deployment.md)."""

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool, san: list | None = None,
          usage: list | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, name: str = "test") -> Pki:
    """A CA `name` and, signed by it, a server certificate (127.0.0.1, localhost) and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{name} CA", ca_key, f"{name} CA", ca_key, ca=True)
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("127.0.0.1", srv_key, f"{name} CA", ca_key, ca=False,
                san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
                usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    (d / "server.crt").write_bytes(srv.public_bytes(pem))
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("cems-collector", cli_key, f"{name} CA", ca_key, ca=False, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    (d / "client.crt").write_bytes(cli.public_bytes(pem))
    return Pki(d / "ca.crt", d / "server.crt", _write_key(srv_key, d / "server.key"), d / "client.crt",
               _write_key(cli_key, d / "client.key"))
