"""Who may see the dashboard: local requests by default, or whoever an ``authorize`` hook admits.

"Local" is judged by the socket peer the ASGI server reports (``scope["client"]``), never by a header:
``X-Forwarded-For`` is written by the client, so a remote request that sends ``127.0.0.1`` in it stays
remote. Behind a reverse proxy on the same host every request looks local; give ``authorize`` then. A
server on a Unix socket reports no peer address, which is not provably local: without ``authorize``, 403.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException

Authorize: TypeAlias = Callable[[ASGIConnection[Any, Any, Any, Any]], bool | Awaitable[bool]]
"""The ``authorize`` hook's type: given the request, return (or await) whether it may see the dashboard.

Only ``True`` admits; anything else, ``False`` or ``None`` included, answers 403.
"""


def _peer(
    connection: ASGIConnection[Any, Any, Any, Any],
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    client = connection.scope.get("client")
    if not client:  # no peer address (some servers on a Unix socket): not provably local
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a name such as a test client's "testclient"
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_local(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Return whether the socket peer of *connection* is a loopback address (IPv4, IPv6 or mapped)."""
    address = _peer(connection)
    return address is not None and address.is_loopback


def allow_networks(*networks: str) -> Authorize:
    """Return an ``authorize`` hook that admits socket peers in *networks* (CIDRs such as ``10.0.0.0/8``).

    For a dashboard reached through a container network or a VPN; loopback is admitted only when listed.

    Raises:
        ValueError: no network is given (the hook would refuse everyone), or one is not a valid CIDR.
    """
    if not networks:
        raise ValueError("allow_networks() needs at least one network, such as '10.0.0.0/8'")
    parsed = [ipaddress.ip_network(network.strip(), strict=False) for network in networks]

    def in_networks(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        address = _peer(connection)
        return address is not None and any(address in network for network in parsed)

    return in_networks


async def admitted(connection: ASGIConnection[Any, Any, Any, Any], authorize: Authorize | None) -> bool:
    """Return whether *authorize* (or, without one, the loopback rule) admits *connection*."""
    if authorize is None:
        return is_local(connection)
    verdict = authorize(connection)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict is True


def refuse(detail: str) -> PermissionDeniedException:
    """Return the 403 for a request the dashboard will not serve, saying why."""
    return PermissionDeniedException(detail=detail)
