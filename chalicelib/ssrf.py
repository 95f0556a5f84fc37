"""Keep webhooks off private networks: check every address a URL's host can mean, and
connect to the address that was checked.

At creation a literal address (any form the resolver accepts: `127.1`, `2130706433`,
`0x7f.1`, IPv4-mapped IPv6) or `localhost` is refused. At run time the host is resolved
once; if any of its addresses is loopback, private, link-local, carrier-grade NAT,
multicast, reserved or unspecified the run fails (not retried). Otherwise the connection is
pinned to the checked address, so a DNS answer that changes between check and connect
(rebinding) cannot slip through, while TLS still verifies the certificate against the
host name.
"""
import ipaddress
import re
import socket
from typing import Optional, Union

from chalicelib.errors import BlockedAddress

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Injectable for tests: (host, port, family, type) -> [(family, type, proto, name, sockaddr)]
resolver = socket.getaddrinfo

CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")


def is_blocked(address: Address) -> bool:
    """Whether webhooks must not reach this address."""
    embedded = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    if embedded is not None:
        address = embedded
    if address.version == 4 and address in CARRIER_GRADE_NAT:
        return True
    return (not address.is_global or address.is_private or address.is_loopback
            or address.is_link_local or address.is_multicast or address.is_reserved
            or address.is_unspecified)


def literal_address(host: str) -> Optional[Address]:
    """The address a host names literally (including the resolver's legacy IPv4 forms)."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fx.]+", host.lower()) or not any(c.isdigit() for c in host):
        return None
    try:
        return ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return None


def is_private_host(host: str) -> bool:
    """At creation: a literal private address or localhost (names are checked at run time)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = literal_address(host)
    return address is not None and is_blocked(address)


def resolve_allowed(host: str, port: int) -> str:
    """The address to connect to: every address of the host must be allowed."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        answers = resolver(host, port, 0, socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(answer[4][0].split("%")[0]) for answer in answers]
    if not addresses:
        raise BlockedAddress(f"{host} has no address")
    for address in addresses:
        if is_blocked(address):
            raise BlockedAddress(f"{host} resolves to {address}, a private or reserved "
                                 "address (ALLOW_PRIVATE_TARGETS is off)")
    return str(addresses[0])
