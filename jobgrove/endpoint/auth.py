"""Cluster secret, viewer tokens and the Origin check of the node endpoint.

With a secret (``--secret-file``) every HTTP and websocket request must carry a token:
``Authorization: Bearer TOKEN``, ``?token=TOKEN`` (browsers cannot set headers on a
websocket) or the ``jobgrove_token`` cookie that ``GET /?token=`` sets for the page's
own assets. A token is ``v1.<subject>.<expiry>.<nonce>.<mac>``: an HMAC-SHA256 of the
rest under the secret, so any node can check any token without shared state. People
get ``viewer`` tokens from ``jobgrove token --ttl``; nodes mint short-lived ``node``
tokens for their relay connections, so the secret itself never crosses the network.

Without a secret the endpoint binds to loopback only and checks that the Host header
names a loopback address (a DNS-rebinding page would otherwise pass the Origin check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from jobgrove.endpoint.http import Request
from jobgrove.errors import JobgroveError

MIN_SECRET_BYTES = 16
#: Default lifetime of a viewer token (seconds), and the longest allowed.
DEFAULT_TTL = 12 * 3600
MAX_TTL = 366 * 24 * 3600
#: Lifetime of the tokens nodes mint for their own relay connections.
NODE_TTL = 300
COOKIE = "jobgrove_token"
_SUBJECTS = ("viewer", "node")


class AuthError(JobgroveError):
    """A request that failed authentication; the message says why (never the secret)."""


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The cluster secret from a file (surrounding whitespace ignored)."""
    file = Path(path)
    try:
        raw = file.read_bytes().strip()
        mode = file.stat().st_mode
    except OSError as exc:
        raise JobgroveError(f"cannot read secret file {path}: {exc.strerror or exc}") from exc
    if len(raw) < MIN_SECRET_BYTES:
        raise JobgroveError(f"secret file {path} holds {len(raw)} bytes; at least "
                            f"{MIN_SECRET_BYTES} are needed (e.g. `head -c 32 /dev/urandom "
                            "| base64 > FILE`)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        import logging

        logging.getLogger(__name__).warning(
            "secret file %s is readable by other users (chmod 600 it)", path)
    return raw


def _mac(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, b"jobgrove-token|" + body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint_token(secret: bytes, ttl: float = DEFAULT_TTL, subject: str = "viewer",
               now: float | None = None) -> str:
    """A token valid for ``ttl`` seconds (``jobgrove token --ttl``)."""
    if subject not in _SUBJECTS:
        raise JobgroveError(f"unknown token subject {subject!r}")
    if not 0 < ttl <= MAX_TTL:
        raise JobgroveError(f"token ttl must be between 1 second and {MAX_TTL} seconds")
    expiry = int((time.time() if now is None else now) + ttl)
    body = f"v1.{subject}.{expiry}.{secrets.token_hex(8)}"
    return f"{body}.{_mac(secret, body)}"


def verify_token(secret: bytes, token: str | None, now: float | None = None) -> str:
    """The token's subject; raises AuthError if it is missing, forged or expired."""
    if not token:
        raise AuthError("a token is required (Authorization: Bearer TOKEN or ?token=; "
                        "get one with `jobgrove token`)")
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "v1" or parts[1] not in _SUBJECTS \
            or not parts[2].isdigit() or len(token) > 256:
        raise AuthError("malformed token")
    body, mac = ".".join(parts[:4]), parts[4]
    if not hmac.compare_digest(_mac(secret, body), mac):
        raise AuthError("invalid token (not made with this cluster's secret)")
    if int(parts[2]) <= (time.time() if now is None else now):
        raise AuthError("token expired; get a new one with `jobgrove token`")
    return parts[1]


def token_expiry(token: str) -> int:
    """Expiry (unix seconds) of a token already verified."""
    return int(token.split(".")[2])


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback addresses (``host`` without port)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.", "ip6-localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(hostport: str) -> str:
    """The host part of a Host header value ("h:1", "[::1]:2", "h")."""
    hostport = hostport.strip()
    if hostport.startswith("["):
        return hostport[1:hostport.find("]")] if "]" in hostport else hostport
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """A request's Origin is fine if absent (not a browser), the page's own origin
    (same host:port as the Host header), or listed in ``allowed`` ("*" allows any)."""
    if origin is None:
        return True
    origin = origin.strip()
    allowed = list(allowed)
    if "*" in allowed or origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == host.strip().lower()


def is_valid(secret: bytes, token: str) -> bool:
    try:
        verify_token(secret, token)
    except AuthError:
        return False
    return True


def token_of(request: Request) -> str | None:
    header = request.header("authorization") or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    if request.query.get("token"):
        return request.query["token"]
    for part in (request.header("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None
