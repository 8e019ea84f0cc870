"""Where outbound webhooks may go: public https receivers, and nothing inside the network.

A subscription URL names a receiver; an admin key can create one, so the URL is untrusted
input that the gateway will POST to from inside the deployment (server-side request forgery,
OWASP). The rules, checked when a subscription is created and again at every delivery:

- `https` only; plain `http` only to a host of `FLYWHEEL_WEBHOOK_ALLOW_HOSTS`, and only with
  `FLYWHEEL_WEBHOOK_ALLOW_HTTP`;
- no user info (`https://user:pass@host`): credentials travel in the signature, not the URL;
- every address the host resolves to must be public: loopback, private, link-local, shared
  (CGNAT), multicast, reserved, unspecified and IPv4-mapped versions of them are refused,
  unless the host or the address is allow-listed; cloud metadata addresses are refused always;
- the address checked is the address connected to: `GuardedTransport` resolves the name
  itself when it opens a connection, checks every address, and connects to a checked one,
  while TLS (SNI, certificate) and the Host header keep the name. A DNS answer that changes
  between the check and the connection (rebinding) cannot redirect a delivery inside.

Redirects are never followed (the sender's client), so a receiver cannot bounce a delivery
elsewhere either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses it resolves to, as strings."""

RESOLVE_TIMEOUT_S = 5.0

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


class TargetRefused(Exception):
    """The URL or the address it resolves to may not receive webhooks; `reason` says why
    without naming the address (the delivery log is readable by admins, not operators)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def address_problem(ip: IPAddress) -> str | None:
    """Why this address may not receive webhooks, or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_problem(ip.ipv4_mapped)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class TargetPolicy:
    allow_names: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()
    allow_http: bool = False
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver | None = None) -> TargetPolicy:
        names: set[str] = set()
        networks: list[Network] = []
        for entry in (e.strip() for e in settings.webhook_allow_hosts.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(
            allow_names=frozenset(names),
            allow_networks=tuple(networks),
            allow_http=settings.webhook_allow_http,
            resolver=resolver or system_resolver,
        )

    def name_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_names

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.allow_networks if net.version == ip.version)

    def host_allowed(self, host: str) -> bool:
        ip = _parse_ip(host)
        return self.name_allowed(host) or (ip is not None and self.address_allowed(ip))

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Refuse an address `host` resolved to (or is), unless allow-listed."""
        problem = address_problem(ip)
        if problem is None:
            return
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if (mapped or ip) in METADATA_ADDRESSES:
            raise TargetRefused(f"the host resolves to {problem}, which is never allowed")
        if self.name_allowed(host) or self.address_allowed(ip):
            return
        raise TargetRefused(
            f"the host resolves to {problem} (allow it with FLYWHEEL_WEBHOOK_ALLOW_HOSTS)"
        )

    def check_url(self, url: str) -> tuple[str, int]:
        """The static rules (scheme, user info, an address literal); returns (host, port)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"the URL cannot be parsed ({exc})") from exc
        host = parts.hostname or ""
        if not host:
            raise TargetRefused("the URL names no host")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise TargetRefused(
                "the URL must not carry user info (user:password@): receivers verify the "
                "signature instead"
            )
        if parts.scheme == "http":
            if not (self.allow_http and self.host_allowed(host)):
                raise TargetRefused(
                    "the URL must be https (plain http only to hosts in "
                    "FLYWHEEL_WEBHOOK_ALLOW_HOSTS, with FLYWHEEL_WEBHOOK_ALLOW_HTTP)"
                )
        elif parts.scheme != "https":
            raise TargetRefused("the URL must be https")
        lowered = host.lower().rstrip(".")
        if (lowered == "localhost" or lowered.endswith(".localhost")) and not self.name_allowed(
            host
        ):
            raise TargetRefused(
                "the host is localhost (allow it with FLYWHEEL_WEBHOOK_ALLOW_HOSTS)"
            )
        ip = _parse_ip(host)
        if ip is not None:
            self.check_address(host, ip)
        return host, port or (443 if parts.scheme == "https" else 80)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of `host`, each checked; a refusal if any is not allowed (a name
        with one public and one private address is refused: the connection could use
        either)."""
        ip = _parse_ip(host)
        if ip is not None:
            self.check_address(host, ip)
            return [str(ip)]
        try:
            addresses = await asyncio.wait_for(self.resolver(host, port), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(
                f"the host does not resolve ({type(exc).__name__})"
            ) from exc
        if not addresses:
            raise httpcore.ConnectError("the host does not resolve")
        for address in addresses:
            parsed = _parse_ip(address)
            if parsed is None:
                raise TargetRefused("the host resolves to something that is not an address")
            self.check_address(host, parsed)
        return addresses

    async def check_subscription(self, url: str) -> None:
        """At subscription time: the static rules, and the name's current addresses if it
        resolves (a name that does not resolve yet is accepted; every delivery checks again)."""
        host, port = self.check_url(url)
        with contextlib.suppress(httpcore.ConnectError):
            await self.resolve(host, port)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host itself, then connects to a checked address: the name is
    never resolved again by anyone between the check and the connection."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.policy.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("unix sockets are not webhook receivers")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection is opened by
    `_PinnedBackend`. No proxy from the environment (a proxy would resolve the name
    itself, unchecked); TLS verified against the URL's host name."""

    def __init__(self, policy: TargetPolicy, *, limits: httpx.Limits) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)  # loaded once: it is slow
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_PinnedBackend(policy),
        )


def refusal_reason(exc: BaseException) -> str | None:
    """The reason of a TargetRefused anywhere in an exception's chain (httpx may wrap it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TargetRefused):
            return current.reason
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def sanitize(text: str, limit: int) -> str:
    """Printable characters only (control characters, escapes and line breaks become a space),
    whitespace collapsed, at most `limit` characters: what a receiver answered, safe to store
    and to show."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    collapsed = " ".join(printable.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 1] + "…"


__all__: Sequence[str] = (
    "GuardedTransport",
    "TargetPolicy",
    "TargetRefused",
    "address_problem",
    "refusal_reason",
    "sanitize",
)
