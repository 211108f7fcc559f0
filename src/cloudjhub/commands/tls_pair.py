"""The hub's certificate and key, checked before a launch makes anything.

A key of the wrong kind (DER, a certificate, an encrypted key, another
certificate's key) would otherwise be found only when the manager's hub fails
to start. The message names the files, never their contents.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def _no_passphrase() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def tls_pair_problem(cert: Path, key: Path) -> str | None:
    """Why --ssl-cert and --ssl-key cannot serve HTTPS together, or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, _no_passphrase)
    except (ssl.SSLError, OSError, ValueError):
        return (
            f"--ssl-cert {cert} and --ssl-key {key}: expected a PEM certificate and the "
            "unencrypted PEM private key that matches it"
        )
    return None
