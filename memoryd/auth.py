"""Access control of the API listener: bearer token and TLS / mTLS credentials.

The token is compared in constant time. No ``authorization`` metadata (or not
``Bearer <token>``) is UNAUTHENTICATED; a token that does not match is
PERMISSION_DENIED. grpc.health.v1 stays open (kubelet probes carry no
credentials); server reflection is *not* exempt: it describes the API to anyone
who can call it, so it requires the token like the memory API does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

import grpc

from memoryd.errors import MemorydError, PermissionDenied, Unauthenticated
from memoryd.settings import Settings

TOKEN_ENV = "MEMORYD_AUTH_TOKEN"
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{setting} {path}: {exc.strerror or exc}") from None


def _check_token(token: str, source: str) -> str:
    if not token:
        raise ValueError(f"{source}: the auth token is empty")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError(f"{source}: the auth token must be printable ASCII without spaces")
    return token


def load_token(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: ``--auth-token-file`` (trailing newline stripped), else ``MEMORYD_AUTH_TOKEN``.

    None when neither is set (auth off). ValueError names the setting on a bad value.
    Read once at startup: rotate by restarting the daemon.
    """
    if settings.auth_token_file:
        raw = _read(settings.auth_token_file, "--auth-token-file")
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError("--auth-token-file: the auth token must be ASCII") from None
        return _check_token(text, "--auth-token-file")
    env = os.environ if env is None else env
    if TOKEN_ENV in env:
        return _check_token(env[TOKEN_ENV].strip(), TOKEN_ENV)
    return None


class TokenCheck:
    """The bearer-token rule, applied by ``memoryd.handlers`` to every non-exempt RPC."""

    def __init__(self, token: str) -> None:
        # Compare digests: equal length, so not even the token's length leaks through timing.
        self._expected = hashlib.sha256(token.encode("ascii")).digest()

    def refusal(self, header: str | None) -> MemorydError | None:
        """None when ``header`` (the ``authorization`` metadata) carries the token, else the error."""
        if header is None:
            return Unauthenticated("missing credentials: send metadata 'authorization: Bearer <token>'")
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Unauthenticated("malformed credentials: expected 'authorization: Bearer <token>'")
        digest = hashlib.sha256(presented.strip().encode("utf-8", "replace")).digest()
        if not hmac.compare_digest(digest, self._expected):
            return PermissionDenied("invalid bearer token")
        return None


def from_settings(settings: Settings, env: Mapping[str, str] | None = None) -> TokenCheck | None:
    """The token check when a token is configured, else None (auth off)."""
    token = load_token(settings, env)
    return None if token is None else TokenCheck(token)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the API listener (None: plaintext); mTLS when ``tls_client_ca`` is set.

    With a client CA, clients must present a certificate signed by it (the handshake
    fails otherwise). Files are read once, at startup.
    """
    if not settings.tls_cert:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mTLS is on top of TLS)")
        return None
    cert = _pem(settings.tls_cert, "--tls-cert")
    key = _pem(settings.tls_key, "--tls-key")
    ca = _pem(settings.tls_client_ca, "--tls-client-ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _pem(path: str, setting: str) -> bytes:
    data = _read(path, setting)
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting} {path}: not a PEM file")
    return data
