"""A member's knobs: timing, snapshots, and the limits that keep it within bounds."""

from __future__ import annotations

from dataclasses import dataclass

from raft_trio.transport import DEFAULT_MAX_FRAME


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock knobs; the core itself only counts ticks."""

    tick_interval: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_append_entries: int = 4096
    # One AppendEntries in flight per follower: proposals that arrive meanwhile
    # pile up and leave together in the next one, so batches grow with load.
    # Measured with `raft-trio stress --processes` at 200k entries: ~10% more
    # entries/s than 32 in flight, since per-message costs dominate here.
    max_inflight: int = 1
    # Longest a send to one peer may take before the connection is dropped and
    # made again.
    send_timeout: float = 5.0
    pre_vote: bool = True
    check_quorum: bool = True
    # How far apart members' clocks may run, as a fraction of elapsed time:
    # a lease is that much shorter than the election timeout it relies on.
    max_clock_drift: float = 0.1

    @property
    def lease_seconds(self) -> float:
        """How long after a heartbeat round leaves a majority's answers vouch for the leader.

        A member ignores vote requests for `election_ticks` ticks after it
        hears from its leader; its first tick may come at once, so count one
        tick fewer, and shrink that by the clock drift allowed.
        """
        return (self.election_ticks - 1) * self.tick_interval * (1 - self.max_clock_drift)

    @property
    def election_seconds(self) -> float:
        """The shortest election timeout."""
        return self.election_ticks * self.tick_interval


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When a member snapshots its state and how much log it keeps behind it."""

    # Take a snapshot once this many entries were applied since the last one
    # (0: never on its own, only on request).
    entries: int = 100_000
    # ... or once the commands applied since the last one add up to this.
    bytes: int = 64 * 1024 * 1024
    # Entries kept behind a snapshot, so a follower that lags by fewer still
    # catches up from the log rather than needing the whole snapshot.
    trailing: int = 10_000
    # Streaming to a follower: chunk size, chunks sent ahead of the
    # follower's acknowledgements, and how long to wait for one before
    # giving up (the transfer resumes at the last acknowledged offset).
    chunk_bytes: int = 1024 * 1024
    window: int = 4
    ack_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.entries, self.bytes, self.trailing) < 0:
            raise ValueError("snapshot entries, bytes and trailing must be >= 0")
        if self.chunk_bytes < 1 or self.window < 1 or self.ack_timeout <= 0:
            raise ValueError("snapshot chunk_bytes, window and ack_timeout must be positive")


# Commands larger than this are refused. A member holds several copies of a
# command on its way through the log (the client's frame, the decoded request,
# its encoding in the log, a packed message per peer and the WAL's, the applied
# value): measured, one 50 MiB value took a leader to 657 MB. Like etcd's 1.5
# MiB request limit, the default keeps that small; the most keeps one entry
# and its AppendEntries well inside a peer connection's frame limit.
DEFAULT_MAX_COMMAND_BYTES = 1024 * 1024
MAX_COMMAND_BYTES = DEFAULT_MAX_FRAME // 2

# An hour: far longer than a client retries one request, so that a session
# expires only once its client is gone.
DEFAULT_SESSION_EXPIRY = 3600.0
# Longest pause between a leader's looks for idle sessions.
SESSION_EXPIRY_CHECK = 5.0

# Segments are deleted whole once a snapshot covers them, so smaller ones
# keep the disk use, and what a restart replays, close to what the trailing
# entries need: 4 MiB is about 60,000 entries of the stress command's size.
WAL_SEGMENT_BYTES = 4 * 1024 * 1024

# Ticks a configuration change waits for a new leader to commit an entry of
# its term, or for the change before it to commit, before it is refused.
TRANSIENT_RETRY_TICKS = 50

# Raft retransmits whatever matters, so a peer that falls this far behind
# loses its oldest queued messages rather than growing memory without bound.
MAX_OUTBOX = 4096

DEFAULT_TIMING = Timing()
DEFAULT_SNAPSHOTS = SnapshotPolicy()
