"""Outbound safety: where the hub may connect when a caller hands it a URL (an agent card to fetch,
a webhook to POST to), and the one HTTP client that connects only to addresses it has checked.

A caller must not use the hub to reach the hub's own network: loopback, link-local, cloud metadata,
private (RFC 1918, fc00::/7), unspecified, multicast and reserved addresses are refused unless the
operator allowed them (`outbound_allow`, `outbound_loopback`). Each request, each redirect hop too,
resolves its host once; every address it resolves to is checked, and the connection goes to the
address that was checked (a rebinding DNS server gets no second lookup). What a caller is told is
"refused by the hub's outbound policy" or that the fetch failed, never whether a port is closed,
filtered or open. Never connects anywhere it has not checked, never follows an unchecked redirect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from agenthub.sdk.errors import InvalidRequest

if TYPE_CHECKING:
    from agenthub.hub.config import HubSettings

log = structlog.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RESPONSE_BYTES = 1_048_576  # the most the hub reads of a response from outside (an agent card)
MAX_REDIRECTS = 3
REFUSED = "refused by the hub's outbound policy"

# Cloud instance-metadata services (credentials live there): AWS, GCP and Azure IMDS, AWS ECS task
# metadata, AWS IMDS over IPv6, Alibaba, Oracle, Azure's wire server. Only an allow entry naming the
# very address opens one: allowing 169.254.0.0/16 or 100.64.0.0/10 does not.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(InvalidRequest):
    """The hub's outbound policy does not let it connect to that address (INVALID_ARGUMENT)."""

    message = REFUSED


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else `ip` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("loopback", "metadata", ...); None for a public one."""
    ip = embedded_ipv4(ip)
    kinds = (
        (ip in METADATA, "metadata"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "reserved"),
    )
    return next((kind for matched, kind in kinds if matched), None)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public addresses the hub may reach; public ones it always may.

    Args:
        networks: allowed networks (an entry of one address is the only way to open a metadata one).
        hosts: allowed host names, exact or `*.suffix`; they may resolve to any non-metadata address.
        loopback: whether loopback addresses are allowed.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()
    loopback: bool = False

    @classmethod
    def from_settings(cls, settings: HubSettings) -> OutboundPolicy:
        """The policy `settings` describe; loopback "auto" is allowed when the hub binds loopback
        (a hub on a laptop calls agents and webhooks on the same laptop)."""
        networks, hosts = [], []
        for entry in settings.outbound_allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.append(entry.lower())
        loopback = settings.outbound_loopback == "allow" or (
            settings.outbound_loopback == "auto" and settings.binds_loopback
        )
        return cls(tuple(networks), tuple(hosts), loopback)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why the hub may not connect to `ip`, reached through the name `host`; None when it may."""
        kind = classify(ip)
        if kind is None:
            return None
        inner = embedded_ipv4(ip)
        if kind == "metadata":
            exact = any(n.num_addresses == 1 and inner in n for n in self.networks)
            return None if exact else kind
        if kind == "loopback" and self.loopback:
            return None
        if self._host_allowed(host) or any(inner in n or ip in n for n in self.networks):
            return None
        return kind

    async def address(self, host: str, port: int) -> IPAddress:
        """The checked address to connect to for `host:port`. Resolves once; OutboundRefused when
        any address the name resolves to is refused, httpx.ConnectError when it resolves to none."""
        try:
            found = [ipaddress.ip_address(host)]
        except ValueError:
            found = await _resolve(host, port)
        for ip in found:
            kind = self.refusal(host, ip)
            if kind is not None:
                log.info("outbound connection refused", host=host, address=str(ip), kind=kind)
                raise OutboundRefused(REFUSED)
        return found[0]

    async def check_url(self, url: str) -> None:
        """OutboundRefused when `url`'s host resolves to a refused address; a name that does not
        resolve now passes (it is checked again on every request)."""
        parsed = httpx.URL(url)
        try:
            await self.address(parsed.host, parsed.port or _default_port(parsed))
        except httpx.ConnectError:
            return

    def client(self, *, timeout_s: float, follow_redirects: bool = False, **limits: Any) -> httpx.AsyncClient:
        """An httpx client whose every request (redirects too) connects only to checked addresses;
        no proxy from the environment, at most MAX_REDIRECTS redirects when it follows them."""
        return httpx.AsyncClient(
            transport=PinnedTransport(self, limits=httpx.Limits(**limits)),
            timeout=timeout_s,
            follow_redirects=follow_redirects,
            max_redirects=MAX_REDIRECTS,
            trust_env=False,
        )

    def _host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)


class PinnedTransport(httpx.AsyncBaseTransport):
    """An HTTP transport that checks each request's host with the policy and connects to the very
    address it checked, keeping the Host header and the TLS server name of the URL."""

    def __init__(self, policy: OutboundPolicy, *, limits: httpx.Limits) -> None:
        self._policy = policy
        self._inner = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        ip = await self._policy.address(url.host, url.port or _default_port(url))
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=str(ip)),
            headers=request.headers,  # keeps Host: the name, not the address
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ResponseTooLarge(Exception):
    """A response from outside was larger than the hub reads."""


async def read_capped(reply: httpx.Response, max_bytes: int = MAX_RESPONSE_BYTES) -> bytes:
    """The body of a streamed response, or ResponseTooLarge past `max_bytes` (decoded bytes, so a
    compressed bomb is cut off too)."""
    declared = reply.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"response of {declared} bytes")
    body = bytearray()
    async for chunk in reply.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ResponseTooLarge(f"response over {max_bytes} bytes")
    return bytes(body)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (through the event loop's resolver, not blocking it)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise httpx.ConnectError(f"cannot resolve {host!r}") from exc
    found = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0])) for info in infos))
    if not found:
        raise httpx.ConnectError(f"cannot resolve {host!r}")
    return found


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
