"""Cluster configurations, carried in the log as CONFIG entries.

A configuration names the voters (who elect leaders and form quorums) and
the learners (who receive the log but do not vote), each with the address
the drivers use to reach it; the core only ever looks at the ids. Changes go
one server at a time (Raft dissertation, section 4.1): add or remove one
learner, promote one learner to voter, or remove one voter. Any two
majorities of configurations that differ by one voter overlap, so a change
takes effect as soon as a server appends its entry, committed or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2

__all__ = ["ConfigChangeError", "Membership"]


class ConfigChangeError(ValueError):
    """A configuration change that must not be made (now, or at all).

    `transient`: only not yet (a new leader has not committed an entry of its
    term); the same change will do in a moment.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _frozen(mapping: Mapping[int, str]) -> Mapping[int, str]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True, slots=True, eq=False)
class Membership:
    voters: Mapping[int, str]
    learners: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", _frozen(self.voters))
        object.__setattr__(self, "learners", _frozen(self.learners))
        for node_id in (*self.voters, *self.learners):
            if type(node_id) is not int or node_id <= 0:
                raise ValueError(f"member ids are positive ints, not {node_id!r}")
        both = set(self.voters) & set(self.learners)
        if both:
            raise ValueError(f"members {sorted(both)} are both voters and learners")

    @classmethod
    def of(cls, voters: Mapping[int, str] | list[int] | tuple[int, ...]) -> Membership:
        """Voters only; a plain list of ids gets empty addresses."""
        if isinstance(voters, Mapping):
            return cls(voters)
        return cls({v: "" for v in voters})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Membership):
            return NotImplemented
        return dict(self.voters) == dict(other.voters) and dict(self.learners) == dict(
            other.learners
        )

    def __hash__(self) -> int:
        return hash((tuple(self.voters.items()), tuple(self.learners.items())))

    def __repr__(self) -> str:
        return f"Membership(voters={dict(self.voters)}, learners={dict(self.learners)})"

    @property
    def members(self) -> frozenset[int]:
        return frozenset(self.voters) | frozenset(self.learners)

    def address(self, node_id: int) -> str | None:
        return self.voters.get(node_id, self.learners.get(node_id))

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    # ---------------------------------------------------------------- changes

    def add_learner(self, node_id: int, address: str) -> Membership:
        if node_id in self.members:
            raise ConfigChangeError(f"member {node_id} is already in the cluster")
        return Membership(self.voters, {**self.learners, node_id: address})

    def promote(self, node_id: int) -> Membership:
        if node_id in self.voters:
            raise ConfigChangeError(f"member {node_id} is already a voter")
        if node_id not in self.learners:
            raise ConfigChangeError(f"member {node_id} is not in the cluster")
        learners = {k: v for k, v in self.learners.items() if k != node_id}
        return Membership({**self.voters, node_id: self.learners[node_id]}, learners)

    def remove(self, node_id: int) -> Membership:
        if node_id not in self.members:
            raise ConfigChangeError(f"member {node_id} is not in the cluster")
        if node_id in self.voters and len(self.voters) == 1:
            raise ConfigChangeError(f"member {node_id} is the only voter")
        return Membership({k: v for k, v in self.voters.items() if k != node_id},
                          {k: v for k, v in self.learners.items() if k != node_id})

    def check_single_change_from(self, old: Membership) -> None:
        """Refuse a change that moves more than one voter (majorities might not overlap)."""
        added = set(self.voters) - set(old.voters)
        dropped = set(old.voters) - set(self.voters)
        if len(added) + len(dropped) > 1:
            raise ConfigChangeError(
                f"voters {sorted(old.voters)} -> {sorted(self.voters)} changes more than one "
                f"voter at a time"
            )
        if not self.voters:
            raise ConfigChangeError("a configuration needs at least one voter")

    # --------------------------------------------------------------- encoding

    def encode(self) -> bytes:
        return cbor2.dumps([[[k, v] for k, v in self.voters.items()],
                            [[k, v] for k, v in self.learners.items()]])

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        try:
            raw: Any = cbor2.loads(data)
            voters, learners = raw
            return cls({k: v for k, v in voters}, {k: v for k, v in learners})
        except Exception as exc:
            raise ValueError(f"not a configuration: {exc}") from None
