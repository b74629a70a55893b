"""Keep result downloads away from the worker's own network (server-side request forgery).

A provider hands back URLs and the worker fetches them; a URL that names a private, loopback or link-local
address (the cloud metadata service at 169.254.169.254 above all) would let whoever controls the provider's
answer read the worker's network. Every URL, and every redirect target, is resolved and checked before a
connection is made; operators allow their own hosts or networks with DOWNLOAD_ALLOWLIST.

The check runs before httpx connects, so a host whose DNS answer changes between the check and the
connection (DNS rebinding) is not covered; deployments that need that put the worker behind an egress proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx

__all__ = ["MAX_REDIRECTS", "DownloadRefused", "check_download_url", "open_download"]

MAX_REDIRECTS = 3
_ALLOWED_SCHEMES = frozenset({"http", "https"})
# NAT64 maps the IPv4 internet into IPv6; the IPv4 address inside must pass the same check.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DownloadRefused(ValueError):
    """A URL the worker must not fetch: wrong scheme, a non-public address, or too many redirects."""


class _Allowlist:
    """DOWNLOAD_ALLOWLIST entries: host names (exact, case-insensitive), IP addresses and CIDR networks."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.hosts.add(_normalise_host(entry))

    def allows_host(self, host: str) -> bool:
        return _normalise_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(address)) is not None:
        return _is_public(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _canonical(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses compare as the IPv4 address they carry (so IPv4 allowlist entries match)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def _resolve(host: str, port: int) -> set[IPAddress]:
    """Every address a connection to `host` might use; raises socket.gaierror when the name does not resolve."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # IPv6 link-local answers may carry a zone ("fe80::1%eth0"); the address is what matters.
    return {ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]) for *_, sockaddr in answers}


async def check_download_url(
    url: str, allowlist: Sequence[str], *, allowlist_setting: str = "DOWNLOAD_ALLOWLIST"
) -> None:
    """Raise DownloadRefused unless `url` is http(s) and every address its host resolves to is public or allowed
    (`allowlist`, which the setting named `allowlist_setting` holds: the refusal says which one to change).

    The URL is parsed by httpx, the same parser that later makes the request, so both see the same host.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise DownloadRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in _ALLOWED_SCHEMES:
        raise DownloadRefused(f"only http and https downloads are allowed, not {parsed.scheme or 'no scheme'!r}")
    if not parsed.host:
        raise DownloadRefused("the URL has no host")
    allowed = _Allowlist(allowlist)
    if allowed.allows_host(parsed.host):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    for address in await _resolve(parsed.host, port):
        address = _canonical(address)
        if not _is_public(address) and not allowed.allows_address(address):
            raise DownloadRefused(
                f"{parsed.host} resolves to {address}, a non-public address (add it to {allowlist_setting} to allow it)"
            )


@asynccontextmanager
async def open_download(
    client: httpx.AsyncClient, url: str, allowlist: Sequence[str], *, max_redirects: int = MAX_REDIRECTS
) -> AsyncIterator[httpx.Response]:
    """A streamed GET of `url` whose body is not read yet; redirects are followed by hand, each one checked.

    The response handed out is the first that is not a redirect, whatever its status.
    """
    for _ in range(max_redirects + 1):
        await check_download_url(url, allowlist)
        async with client.stream("GET", url, follow_redirects=False) as response:
            if not response.is_redirect:
                yield response
                return
            url = str(response.url.join(response.headers["location"]))
    raise DownloadRefused(f"more than {max_redirects} redirects")


def unreachable(exc: BaseException) -> str:
    """Why a connection failed, in words a person can act on (the exception itself goes to the logs, not to
    people): "its name does not resolve", "the connection was refused", ..."""
    causes = _causes(exc)
    text = " ".join(str(cause).lower() for cause in causes)
    if any(isinstance(cause, socket.gaierror) for cause in causes) or "name or service not known" in text:
        return "its name does not resolve; check the URL and the network"
    if any(isinstance(cause, httpx.TimeoutException | TimeoutError) for cause in causes):
        return "it did not answer in time"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes) or "connection refused" in text:
        return "the connection was refused; check that the server is up"
    if isinstance(exc, httpx.ConnectError):
        return "no connection could be made; check the URL and the network"
    return "the connection broke off; it is tried again"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, down the chain (anyio keeps each failed attempt's error there)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
