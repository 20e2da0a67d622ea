"""Redis connection URLs, parsed into a ``RedisTarget`` (pure: no connection is made).

Schemes::

    redis://[[user]:pass@]host[:port][/DB][?db=N]
    rediss://[[user]:pass@]host[:port][/DB][?ssl_ca_certs=FILE&ssl_cert_reqs=none|optional|required]
    unix://[[user]:pass@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:pass@]host:port[,host:port...]/SERVICE[/DB]
    redis+cluster://[[user]:pass@]host:port[,host:port...]

Credentials are percent-decoded. With Sentinel they authenticate to the primary, not
to the sentinels. A malformed URL raises ``BadRedisURLError`` whose one-line message
names the problem; no message or repr ever shows a password.
"""

from __future__ import annotations

import dataclasses
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote

from jobgrove.errors import BadRedisURLError

TargetKind = Literal["single", "sentinel", "cluster"]

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
DEFAULT_PORT = 6379
#: Query options each scheme takes.
_OPTIONS: dict[str, frozenset[str]] = {
    "redis": frozenset({"db"}),
    "rediss": frozenset({"db", "ssl_ca_certs", "ssl_cert_reqs"}),
    "unix": frozenset({"db"}),
    "redis+sentinel": frozenset(),
    "redis+cluster": frozenset(),
}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs")
CERT_REQS = ("none", "optional", "required")
_FORMS = {
    "redis": "redis://[user:pass@]host[:port][/DB]",
    "rediss": "rediss://[user:pass@]host[:port][/DB][?ssl_ca_certs=FILE&ssl_cert_reqs=...]",
    "unix": "unix:///path/to/redis.sock[?db=N]",
    "redis+sentinel": "redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]",
    "redis+cluster": "redis+cluster://[user:pass@]host:port[,host:port...]",
}


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to reach it, from a URL (``parse_redis_url``).

    ``kind``: ``single`` (one server: ``redis://``, ``rediss://``, ``unix://``),
    ``sentinel`` (``hosts`` are the sentinels, ``service`` the monitored primary's name)
    or ``cluster`` (``hosts`` are seed nodes; any one of them can start the client).
    """

    kind: TargetKind
    #: (host, port) pairs: the server, the sentinels, or the cluster's seeds.
    hosts: tuple[tuple[str, int], ...] = ()
    #: The socket of a ``unix://`` URL (then ``hosts`` is empty).
    unix_socket: str | None = None
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str | None = None

    @property
    def scheme(self) -> str:
        if self.kind != "single":
            return f"redis+{self.kind}"
        return "unix" if self.unix_socket is not None else "rediss" if self.tls else "redis"

    def display(self) -> str:
        """The target as a URL, with the password (if any) shown as ``***``."""
        auth = ""
        if self.username is not None or self.password is not None:
            user = quote(self.username or "", safe="")
            auth = f"{user}:***@" if self.password is not None else f"{user}@"
        if self.unix_socket is not None:
            where, path = "", self.unix_socket
        else:
            where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
            path = f"/{self.service}/{self.db}" if self.kind == "sentinel" else (
                "" if self.kind == "cluster" else f"/{self.db}")
        query = [f"{name}={value}" for name, value in (
            ("db", self.db if self.unix_socket is not None else None),
            ("ssl_ca_certs", self.ssl_ca_certs), ("ssl_cert_reqs", self.ssl_cert_reqs))
            if value is not None]
        return f"{self.scheme}://{auth}{where}{path}" + ("?" + "&".join(query) if query else "")

    def __str__(self) -> str:
        return self.display()


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:pass@`` part replaced by ``***`` (for
    messages). Works on malformed URLs too; a lone ``secret@`` becomes ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    # The credentials end at the last '@' before the query: a raw '@' or '/' in a
    # password must not leave part of it visible.
    head, qmark, query = rest.partition("?")
    if "@" not in head:
        return url
    userinfo, _, tail = head.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{tail}{qmark}{query}"


def _fail(url: str, problem: str) -> BadRedisURLError:
    return BadRedisURLError(f"bad Redis URL {redact_url(url)!r}: {problem}")


def _port(url: str, text: str, host: str) -> int:
    if not text:
        raise _fail(url, f"missing port after host {host!r}")
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= 65535:
        raise _fail(url, f"bad port {text!r} (expected 1-65535)")
    return int(text)


def _host_port(url: str, item: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` or ``[v6addr][:port]``."""
    if not item:
        raise _fail(url, "missing host")
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise _fail(url, f"bad host {item!r} (IPv6 is written [addr]:port)")
        port_text, has_port = rest[1:], bool(rest)
    else:
        host, colon, port_text = item.rpartition(":")
        if not colon:
            host, port_text = item, ""
        has_port = bool(colon)
        if not host:
            raise _fail(url, f"missing host before ':{port_text}'")
    if any(c.isspace() or c in "/@[]" for c in host):
        raise _fail(url, f"bad host {host!r}")
    if ":" in host and not item.startswith("["):
        raise _fail(url, f"bad host {host!r} (IPv6 is written [addr]:port)")
    if not has_port:
        if default_port is None:
            raise _fail(url, f"missing port after host {host!r}")
        return unquote(host), default_port
    return unquote(host), _port(url, port_text, host)


def _db(url: str, text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise _fail(url, f"bad DB number {text!r} (expected an integer >= 0)")
    return int(text)


def _query(url: str, scheme: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _fail(url, f"bad query string {query!r}") from None
    for name, value in pairs:
        if name not in _OPTIONS[scheme]:
            if name in _TLS_OPTIONS:
                raise _fail(url, f"query option {name!r} needs rediss://")
            known = ", ".join(sorted(_OPTIONS[scheme])) or "none"
            raise _fail(url, f"unknown query option {name!r} (known for {scheme}://: {known})")
        if name in options:
            raise _fail(url, f"query option {name!r} given twice")
        if not value:
            raise _fail(url, f"query option {name!r} has no value")
        options[name] = value
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in CERT_REQS:
        raise _fail(url, f"bad ssl_cert_reqs {reqs!r} (expected {', '.join(CERT_REQS)})")
    return options


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, the rest of the netloc)."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, rest = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon and password else None), rest


def parse_redis_url(url: str) -> RedisTarget:
    """The target a Redis URL names; ``BadRedisURLError`` if it is malformed."""
    if not isinstance(url, str) or not url.strip():
        raise BadRedisURLError("bad Redis URL: empty")
    if any(c.isspace() for c in url):
        raise _fail(url, "contains whitespace")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    expected = "expected " + ", ".join(f"{s}://" for s in SCHEMES)
    if not sep:
        raise _fail(url, f"no scheme ({expected})")
    if scheme not in SCHEMES:
        raise _fail(url, f"unknown scheme {scheme + '://'!r} ({expected})")
    if "#" in rest:
        raise _fail(url, "unexpected '#' (write '#' in a password as %23)")
    rest, _, query = rest.partition("?")
    options = _query(url, scheme, query)
    # The netloc ends at the first '/' after the credentials' last '@'.
    at = rest.rfind("@")
    slash = rest.find("/", at + 1)
    netloc, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    username, password, hosts_text = _credentials(netloc)
    tls = scheme == "rediss"
    tls_options = {"ssl_ca_certs": options.get("ssl_ca_certs"),
                   "ssl_cert_reqs": options.get("ssl_cert_reqs")}

    if scheme == "unix":
        if hosts_text:
            raise _fail(url, f"unix:// takes a socket path, not a host {hosts_text!r} "
                             "(write unix:///path/to/redis.sock)")
        if path in ("", "/"):
            raise _fail(url, f"missing socket path ({_FORMS[scheme]})")
        db = _db(url, options["db"]) if "db" in options else 0
        return RedisTarget("single", unix_socket=unquote(path), db=db, username=username,
                           password=password)

    items = hosts_text.split(",")
    if scheme == "redis+sentinel":
        hosts = tuple(_host_port(url, item, None) for item in items)
        parts = path.split("/")[1:] if path else []
        if not parts or not parts[0]:
            raise _fail(url, f"missing SERVICE ({_FORMS[scheme]})")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            raise _fail(url, f"bad path {path!r} ({_FORMS[scheme]})")
        db = _db(url, parts[1]) if len(parts) == 2 else 0
        return RedisTarget("sentinel", hosts=hosts, service=unquote(parts[0]), db=db,
                           username=username, password=password)

    if scheme == "redis+cluster":
        hosts = tuple(_host_port(url, item, None) for item in items)
        if path not in ("", "/", "/0"):
            raise _fail(url, f"redis+cluster:// takes no DB, got {path!r} "
                             "(a cluster has database 0 only)")
        return RedisTarget("cluster", hosts=hosts, username=username, password=password)

    # redis:// and rediss://: one server.
    if len(items) > 1:
        raise _fail(url, f"{scheme}:// takes one host; several need redis+sentinel:// "
                         "or redis+cluster://")
    host = _host_port(url, items[0], DEFAULT_PORT)
    db_text = path[1:] if path.startswith("/") else path
    if db_text and "db" in options and db_text != options["db"]:
        raise _fail(url, "DB given twice (path and ?db=)")
    db = _db(url, db_text or options.get("db") or "0")
    return RedisTarget("single", hosts=(host,), db=db, username=username, password=password,
                       tls=tls, **tls_options)


#: ``url`` fit for messages: the password replaced by ``***``.
redacted = redact_url


def check_url(url: str) -> str:
    """``url`` itself if jobgrove can use it, else BadRedisURLError saying what is wrong
    (before any connection is tried: a typo is one line, not a traceback)."""
    parse_redis_url(url)
    return url
