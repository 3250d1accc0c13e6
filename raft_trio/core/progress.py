"""What a leader knows about each follower's log (etcd's tracker.Progress)."""

from __future__ import annotations

from collections import deque


class Progress:
    """Replication state of one follower.

    In *probe* state the leader sends one AppendEntries at a time and waits
    for the answer (it does not know where the logs diverge). In
    *replicate* state it streams entries optimistically, up to
    `max_inflight` unacknowledged messages, advancing `next` as it sends.
    In *snapshot* state (`pending_snapshot` > 0) the follower needs entries
    the leader compacted away; a snapshot is on its way and nothing else is
    sent until it is acknowledged or reported failed.
    """

    __slots__ = (
        "inflight",
        "match",
        "match_at_heartbeat",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "probing",
        "snapshot_rounds",
        "stalled_rounds",
    )

    def __init__(self, next_index: int, max_inflight: int):
        self.match = 0
        self.next = next_index
        self.probing = True
        # A probe is outstanding: do not send another until an answer or a heartbeat round.
        self.probe_sent = False
        self.max_inflight = max_inflight
        # Last index carried by each unacknowledged message, oldest first.
        self.inflight: deque[int] = deque()
        self.match_at_heartbeat = 0
        self.stalled_rounds = 0
        self.pending_snapshot = 0
        # Heartbeat rounds since the snapshot was sent.
        self.snapshot_rounds = 0

    def can_send(self) -> bool:
        if self.pending_snapshot:
            return False
        if self.probing:
            return not self.probe_sent
        return len(self.inflight) < self.max_inflight

    def sent(self, last_index: int) -> None:
        if self.probing:
            self.probe_sent = True
        else:
            self.inflight.append(last_index)
            self.next = last_index + 1

    def acknowledged(self, match_index: int) -> bool:
        """Record a successful append; returns whether match advanced."""
        advanced = match_index > self.match
        if advanced:
            self.match = match_index
        if self.next <= match_index:
            self.next = match_index + 1
        while self.inflight and self.inflight[0] <= match_index:
            self.inflight.popleft()
        if self.pending_snapshot and match_index >= self.pending_snapshot:
            self.pending_snapshot = 0
        if self.probing and not self.pending_snapshot:
            self.probing = False
            self.probe_sent = False
            self.inflight.clear()
        return advanced

    def become_snapshot(self, index: int) -> None:
        self.pending_snapshot = index
        self.snapshot_rounds = 0
        self.probing = True
        self.probe_sent = False
        self.inflight.clear()

    def become_probe(self, next_index: int) -> None:
        self.pending_snapshot = 0
        self.probing = True
        self.probe_sent = False
        self.inflight.clear()
        self.next = max(next_index, self.match + 1)
