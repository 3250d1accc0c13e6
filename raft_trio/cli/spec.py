"""The `--cluster` string: members as `1=host:port,2=host:port` or bare `host:port,...`.

Everything is checked before a command touches anything, and what is wrong is
said in one line (ValueError): a `;` between members, a host that cannot be a
host, a port out of range, an id or an address given twice. A bare address
has no id (None): the member at it says which it is when asked, and no
command guesses one from its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from raft_trio.protocol import check_address

_ID = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of --cluster: the id given for it (None for a bare address) and where."""

    id: int | None
    address: str


def _address_key(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.lower().removesuffix("."), int(port)


def parse_members(entries: list[tuple[str | None, str]]) -> list[Member]:
    """Check (raw id or None, address) pairs: ids positive and distinct, addresses valid
    and distinct."""
    if not entries:
        raise ValueError("no members given")
    members: list[Member] = []
    ids: set[int] = set()
    seen: dict[tuple[str, int], Member] = {}
    for raw_id, address in entries:
        node_id: int | None = None
        if raw_id is not None:
            if not _ID.fullmatch(raw_id):
                raise ValueError(f"bad member id {raw_id!r}: expected a positive number")
            node_id = int(raw_id)
            if node_id < 1:
                raise ValueError(f"bad member id {raw_id!r}: ids start at 1")
            if node_id in ids:
                raise ValueError(f"member id {node_id} is given twice")
            ids.add(node_id)
        check_address(address)
        key = _address_key(address)
        if key in seen:
            raise ValueError(f"address {address} is given twice{_both(seen[key].id, node_id)}")
        member = Member(node_id, address)
        seen[key] = member
        members.append(member)
    return members


def _both(first: int | None, second: int | None) -> str:
    if first is None or second is None:
        return ""
    return f" (members {first} and {second})"


def parse_cluster(spec: str) -> list[Member]:
    """Parse `1=host:port,2=host:port` or `host:port,host:port` (or a mix), in order."""
    entries: list[tuple[str | None, str]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        separator = next((c for c in part if c == ";" or c.isspace()), None)
        if separator is not None:
            raise ValueError(f"{part!r}: separate members with commas, not {separator!r}")
        if "=" in part:
            raw_id, address = part.split("=", 1)
            entries.append((raw_id.strip(), address.strip()))
        else:
            entries.append((None, part))
    if not entries:
        raise ValueError("no members given")
    return parse_members(entries)


def cluster_with_ids(spec: str) -> dict[int, str]:
    """Parse a cluster whose every member has an id (what `serve` bootstraps from)."""
    members = parse_cluster(spec)
    for member in members:
        if member.id is None:
            raise ValueError(f"{member.address} needs an id: ID={member.address}")
    return {m.id: m.address for m in members if m.id is not None}


def addresses_of(spec: str) -> list[str]:
    """Just the addresses (for commands that any member can answer)."""
    return [m.address for m in parse_cluster(spec)]
