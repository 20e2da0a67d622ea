"""Redis URLs checked before any connection is tried, so a typo is a one-line error
(``RedisUrlError``) instead of a traceback from deep inside redis-py.

``URL_CHECKS`` maps each scheme jobgrove can connect to onto the check of the rest of
the URL: supporting another scheme (``redis+sentinel://``, ``redis+cluster://``) means
adding its connector to ``connection.py`` and its check here.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

from jobgrove.errors import RedisUrlError

#: The part of the URL after its scheme -> what is wrong with it, or None.
UrlCheck = Callable[[SplitResult], "str | None"]


def _db(parts: SplitResult, path_db: bool) -> str | None:
    """The database number, from the path (``/N``) or the query (``?db=N``)."""
    candidates = []
    if path_db and parts.path not in ("", "/"):
        candidates.append(parts.path.lstrip("/"))
    candidates += parse_qs(parts.query).get("db", [])
    for text in candidates:
        if not text.isdigit():
            return f"the database must be a number (e.g. /0), got {text!r}"
    return None


def _check_tcp(parts: SplitResult) -> str | None:
    # No host means localhost, as redis-py reads it.
    try:
        parts.port  # noqa: B018  (urllib checks the port when it is read)
    except ValueError:
        return "the port must be a number from 1 to 65535 (redis://HOST:PORT/DB)"
    return _db(parts, path_db=True)


def _check_unix(parts: SplitResult) -> str | None:
    if not parts.path or parts.path == "/":
        return "no socket path (expected unix:///path/to/redis.sock?db=0)"
    return _db(parts, path_db=False)


URL_CHECKS: dict[str, UrlCheck] = {"redis": _check_tcp, "rediss": _check_tcp,
                                   "unix": _check_unix}


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url.split("@")[-1] if "@" in url else url


def check_url(url: str) -> str:
    """``url`` itself if jobgrove can use it, else RedisUrlError saying what is wrong."""
    shown = redacted(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisUrlError(f"bad Redis URL {shown!r}: {exc}") from None
    schemes = ", ".join(f"{s}://" for s in URL_CHECKS)
    if "://" not in url:
        raise RedisUrlError(f"bad Redis URL {shown!r}: it must start with one of {schemes}")
    check = URL_CHECKS.get(parts.scheme.lower())
    if check is None:
        raise RedisUrlError(f"bad Redis URL {shown!r}: unsupported scheme "
                            f"'{parts.scheme}://' (use one of {schemes})")
    problem = check(parts)
    if problem:
        raise RedisUrlError(f"bad Redis URL {shown!r}: {problem}")
    return url
