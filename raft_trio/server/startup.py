"""Bringing a member back from its data directory: the newest snapshot, the WAL after
it, and the core rebuilt from both, checked against what the member was told."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from raft_trio.core import Config, Membership, RaftNode, SnapshotRef
from raft_trio.errors import RaftError
from raft_trio.server.options import WAL_SEGMENT_BYTES
from raft_trio.server.snapshots import Snapshots
from raft_trio.server.state import MemberState
from raft_trio.storage import WAL

log = logging.getLogger("raft_trio.server")


async def open_member(member: MemberState, snapshots: Snapshots,
                      given: Mapping[int, str]) -> SnapshotRef | None:
    """Load the snapshot and the WAL, and build the core: sets member.wal and member.node.
    Returns the snapshot loaded, if any. `given` is the cluster the member was started
    with, which may differ from the one recorded at its first start."""
    snapshot = await trio.to_thread.run_sync(snapshots.load)
    wal, state = await trio.to_thread.run_sync(
        WAL.open, member.data_dir / "wal", WAL_SEGMENT_BYTES
    )
    try:
        marker = state.snapshot_marker
        if marker is not None and (snapshot is None or marker[0] > snapshot.index):
            raise RaftError(
                f"member {member.id}: the log in {member.data_dir / 'wal'} starts after a "
                f"snapshot at index {marker[0]}, but the newest snapshot in "
                f"{member.snapshot_dir} is at {snapshot.index if snapshot else 'none'}: a "
                f"snapshot file is missing"
            )
        t = member.timing
        config = Config(
            election_ticks=t.election_ticks,
            heartbeat_ticks=t.heartbeat_ticks,
            max_append_entries=t.max_append_entries,
            max_inflight=t.max_inflight,
            pre_vote=t.pre_vote,
            check_quorum=t.check_quorum,
        )
        try:
            node = RaftNode(
                member.id, _base_membership(member), hard_state=state.hard_state,
                entries=state.entries, snapshot=snapshot, config=config,
            )
        except ValueError as exc:
            raise RaftError(f"member {member.id}: cannot rebuild the log in {member.data_dir}: "
                            f"{exc}") from None
        _check_address(member, node.membership, given)
    except BaseException:
        wal.close()
        raise
    member.wal = wal
    member.node = node
    member.last_applied = node.applied
    member.applied_term = snapshot.term if snapshot else 0
    log.info("member %d: loaded term %d, snapshot at %d, %d log entries from %s", member.id,
             state.hard_state.term, node.snapshot.index, len(node.log), member.data_dir)
    return snapshot


def _base_membership(member: MemberState) -> Membership:
    """The configuration as of the log's start: the snapshot's, or the bootstrap one."""
    meta = member.snapshot_meta
    if meta is None:
        return Membership(member.cluster)
    if meta.membership:
        return Membership.decode(meta.membership)
    # A file from before snapshots recorded addresses.
    return Membership({v: member.cluster.get(v, "") for v in meta.voters})


def _check_address(member: MemberState, membership: Membership,
                   given: Mapping[int, str]) -> None:
    """Refuse to listen at an address other than the one the configuration in
    force gives this member (its peers look for it there), and say so when the
    `given` bootstrap configuration differs from it elsewhere: the recorded
    configuration, and the log's changes to it, rule."""
    stored = membership.address(member.id)
    if stored and stored != member.address:
        raise RaftError(
            f"member {member.id}: its address is {stored} in the cluster's configuration "
            f"(kept in {member.data_dir}), not {member.address}: start it with {stored}, or "
            f"remove it from the cluster and add it again at the new address"
        )
    differ = sorted(i for i, a in given.items() if membership.address(i) != a)
    if differ:
        log.warning("member %d: the cluster given at start differs from the configuration "
                    "in force (kept in %s) for members %s; using the configuration: %s",
                    member.id, member.data_dir, ", ".join(map(str, differ)), membership)
