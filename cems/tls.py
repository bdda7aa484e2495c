"""TLS client contexts for the broker (`[mqtt]`) and the database (`[influx]`), built from the config.

One builder for both, so the collector, the edge gateways, the HJ 212 bridge and the InfluxDB client
verify servers the same way: the system's CAs unless `ca_file` names the one to trust, a client
certificate when `cert_file` (and `key_file`) are set, host names checked unless switched off.
"""

import ssl
from pathlib import Path


class TlsError(ValueError):
    """A certificate, key or CA file cannot be used; the message says which and why."""


def client_context(ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None,
                   verify_hostname: bool = True) -> ssl.SSLContext:
    """A TLS 1.2+ client context that verifies the server (always) and its name (unless told not to)."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"ca_file {ca_file}: not a readable PEM CA certificate ({_reason(e)})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cert_file {cert_file} / key_file {key_file or '(in cert_file)'}: not a matching "
                           f"PEM certificate and private key ({_reason(e)})") from None
    ctx.check_hostname = verify_hostname
    return ctx


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
