"""Reading a Redis Sentinel URL: which sentinels to ask, for which master, with which credentials.

``redis+sentinel://[user:password@]host:port,host:port/<master name>[/<db>][?option=value&...]`` names the
sentinels (any one that answers will do) and the master name they monitor; ``rediss+sentinel://`` speaks
TLS to the sentinels and the master alike. The user and password are those of the master (and its
replicas); the sentinels' own, when they require one, are the ``sentinel_username`` and
``sentinel_password`` options. Nothing here connects: a URL is read, and any mistake in it is reported,
when the mediator is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379
# Options the URL may carry besides credentials: what TLS needs (as redis-py names them) and the
# sentinels' own credentials.
TLS_OPTIONS = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
_CERT_REQUIREMENTS = ("none", "optional", "required")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """What a ``redis+sentinel://`` URL says.

    Attributes:
        sentinels: Host and port of each sentinel, in the order given.
        master: The name the sentinels monitor the master under.
        db: The database number on the master.
        username: The master's user (ACL), if any.
        password: The master's password, if any.
        ssl: Whether connections (to the sentinels and to the master) use TLS.
        tls: TLS options as redis-py's connection takes them (``ssl_ca_certs``, ...).
        sentinel_username: The sentinels' user, when they require one.
        sentinel_password: The sentinels' password, when they require one.
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    tls: dict[str, Any] = field(default_factory=dict)
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    """Return whether *url* is a ``redis+sentinel://`` (or ``rediss+sentinel://``) URL."""
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``redis+sentinel://host:port,host:port/<master name>/<db>`` URL.

    Raises:
        ValueError: the URL is malformed; the message says which part and what was expected.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed [IPv6 address], say
        raise ValueError(f"cannot read Sentinel URL {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://, got {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = credentials_of(userinfo)
    sentinels = tuple(address_of(address, url, DEFAULT_SENTINEL_PORT) for address in hosts.split(","))
    master, db = _master_and_db(parts.path, url)
    options = read_options(parts.query, url, TLS_OPTIONS | _SENTINEL_OPTIONS)
    tls = {name: value for name, value in options.items() if name in TLS_OPTIONS}
    if tls and scheme != "rediss+sentinel":
        raise ValueError(f"TLS options ({', '.join(sorted(tls))}) need rediss+sentinel://, in {url!r}")
    return SentinelUrl(
        sentinels=sentinels,
        master=master,
        db=db,
        username=username,
        password=password,
        ssl=scheme == "rediss+sentinel",
        tls=tls_values(tls, url),
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def credentials_of(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, has_password, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if has_password else None


def address_of(address: str, url: str, default_port: int) -> tuple[str, int]:
    """Read ``host``, ``host:port`` or ``[v6 address]:port``; the port is *default_port* when left out."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")  # urlsplit saw to the closing bracket
        if rest and not rest.startswith(":"):
            raise ValueError(f"address {address!r} is not [IPv6 address]:port, in {url!r}")
        port = rest[1:]
    else:
        host, _, port = address.partition(":")
    if not host:
        raise ValueError(f"the URL lists host:port pairs separated by commas; got {address!r} in {url!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} of {host} is not a port number (1-65535), in {url!r}")
    return host, int(port)


def _master_and_db(path: str, url: str) -> tuple[str, int]:
    segments = path.strip("/").split("/") if path.strip("/") else []
    if not segments or len(segments) > 2:
        raise ValueError(
            "a Sentinel URL's path is /<master name> or /<master name>/<db>, as in "
            f"redis+sentinel://127.0.0.1:26379/mymaster/0; got {url!r}"
        )
    master = unquote(segments[0])
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"the database in a Sentinel URL is a number (0 or more), got {db!r} in {url!r}")
    return master, int(db)


def read_options(query: str, url: str, allowed: frozenset[str]) -> dict[str, str]:
    """Return the URL's ``?name=value`` options, each one of *allowed* and given once."""
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ValueError(f"unknown option(s) {', '.join(unknown)} in URL {url!r}; it takes {known}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"option(s) {', '.join(repeated)} given twice in URL {url!r}")
    return dict(pairs)


def tls_values(tls: dict[str, str], url: str) -> dict[str, Any]:
    """Return TLS options as redis-py takes them (``ssl_check_hostname`` a bool), each checked."""
    values: dict[str, Any] = dict(tls)
    requirement = tls.get("ssl_cert_reqs")
    if requirement is not None and requirement not in _CERT_REQUIREMENTS:
        raise ValueError(
            f"ssl_cert_reqs is one of {', '.join(_CERT_REQUIREMENTS)}, got {requirement!r} in {url!r}"
        )
    check = tls.get("ssl_check_hostname")
    if check is not None:
        if check.lower() not in ("true", "false"):
            raise ValueError(f"ssl_check_hostname is true or false, got {check!r} in {url!r}")
        values["ssl_check_hostname"] = check.lower() == "true"
    return values
