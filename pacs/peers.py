"""Who may send to the DICOM node: calling AE titles bound to the hosts they call from.

A calling AE title is a claim anyone on the network can make; the address a connection
comes from is not (on a hospital LAN, without spoofing TCP). So, as Orthanc's
``DicomModalities`` with ``DicomCheckModalityHost`` and dcm4chee's AE registry do, each
known peer is an AE title *and* its host, and an association is accepted only when both
match one entry. The table is the setting ``CXR_LISTEN_PEERS``::

    CR_ROOM1@10.20.0.15, CR_ROOM2@10.20.0.16, PACS@pacs.hospital.example, *@10.30.0.0/24

- ``AE@host``: the AE title (1-16 characters; ``*`` for any title from that host) and the
  host: an IPv4/IPv6 address, a network in CIDR notation, or a host name resolved at start.
- Empty (the default): only this machine may send (loopback addresses, any AE title), so
  ``cxr-triage run --listen`` works on one machine and nothing from the LAN gets in.
- ``CXR_LISTEN_ALLOW_ANY_PEER=true``: anyone, from anywhere, under any title; logged as a
  warning at every start. For a closed test network only.

The check happens twice: at TCP accept (a host on no entry is disconnected before a thread
or a byte of DICOM is spent on it) and at A-ASSOCIATE-RQ (the calling AE title must be
bound to that host; otherwise A-ASSOCIATE-RJ "calling AE title not recognised").
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

log = logging.getLogger(__name__)

ANY_TITLE = "*"
AE_TITLE_MAX_LENGTH = 16
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class PeerSpecError(ValueError):
    """An entry of ``CXR_LISTEN_PEERS`` that cannot be a peer; the message names it."""


def check_ae_title(title: str) -> str:
    """``title`` if it is a valid AE title (PS3.5 VR AE: 1-16 characters, no backslash or
    control characters, not only spaces), else :class:`PeerSpecError`."""
    if (
        not title.strip()
        or len(title) > AE_TITLE_MAX_LENGTH
        or "\\" in title
        or any(ord(c) < 0x20 or ord(c) > 0x7E for c in title)
    ):
        raise PeerSpecError(f"{title!r} is not a valid AE title (1-16 ASCII characters)")
    return title


@dataclass(frozen=True)
class Peer:
    """One known sender: an AE title (or ``*``) and the networks it may call from."""

    ae_title: str
    host: str  # as written in the setting, for messages
    networks: tuple[IPNetwork, ...]

    def admits(self, ae_title: str, address: IPAddress) -> bool:
        title_matches = self.ae_title == ANY_TITLE or self.ae_title == ae_title.strip()
        return title_matches and self.covers(address)

    def covers(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}"


@dataclass(frozen=True)
class PeerTable:
    """The known peers, or anyone (``allow_any``)."""

    peers: tuple[Peer, ...]
    allow_any: bool = False

    def host_is_known(self, host: str) -> bool:
        """May a TCP connection from ``host`` go on to association negotiation?"""
        if self.allow_any:
            return True
        address = parse_address(host)
        return address is not None and any(peer.covers(address) for peer in self.peers)

    def admits(self, ae_title: str, host: str) -> bool:
        """May calling AE title ``ae_title`` associate from ``host``?"""
        if self.allow_any:
            return True
        address = parse_address(host)
        return address is not None and any(peer.admits(ae_title, address) for peer in self.peers)

    def describe(self) -> str:
        """One line for the start-up log: who may send (AE titles and hosts are
        configuration, not patient data)."""
        if self.allow_any:
            return "ANY host under ANY AE title (CXR_LISTEN_ALLOW_ANY_PEER)"
        return ", ".join(str(peer) for peer in self.peers)


def parse_peers(value: str, *, allow_any: bool = False) -> PeerTable:
    """``CXR_LISTEN_PEERS`` -> the peer table; empty means this machine only.

    Host names are resolved now (``getaddrinfo``): a name that does not resolve is an error
    at start, never a silently empty entry.
    """
    if allow_any:
        return PeerTable((), allow_any=True)
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        return PeerTable((Peer(ANY_TITLE, "loopback", LOOPBACK),))
    return PeerTable(tuple(_parse_entry(entry) for entry in entries))


def _parse_entry(entry: str) -> Peer:
    title, at, host = entry.rpartition("@")
    if not at or not host.strip():
        raise PeerSpecError(f"peer {entry!r} is not AE_TITLE@host (e.g. CR_ROOM1@10.20.0.15)")
    title = title.strip()
    if title != ANY_TITLE:
        check_ae_title(title)
    host = host.strip()
    return Peer(title, host, _networks(host, entry))


def _networks(host: str, entry: str) -> tuple[IPNetwork, ...]:
    try:
        return (_normalise_network(ipaddress.ip_network(host.strip("[]"), strict=False)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as error:
        raise PeerSpecError(f"peer {entry!r}: host {host!r} does not resolve ({error})") from error
    found = {ipaddress.ip_network(str(info[4][0]).split("%")[0]) for info in infos}
    return tuple(sorted((_normalise_network(n) for n in found), key=str))


def _normalise_network(network: IPNetwork) -> IPNetwork:
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(mapped)
    return network


def parse_address(host: str) -> IPAddress | None:
    """The peer's address as the socket reports it; an IPv4-mapped IPv6 address (a dual
    stack listener) is compared as the IPv4 address it is."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
