"""The client-session table's rules, and the applier's handling of SESSION entries."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import cbor2
import pytest

from raft_trio import KVStateMachine, RaftServer
from raft_trio.core import Entry, EntryKind
from raft_trio.server.applier import Applier
from raft_trio.server.entry_codec import (
    decode_commands,
    decode_entries,
    session_datas,
    split_sessions,
)
from raft_trio.server.snapshots import Snapshots
from raft_trio.sessions import SESSION_EXPIRED, STALE, Session, SessionTable


class Counter:
    """A state machine where applying twice shows: every command adds to a total."""

    def __init__(self) -> None:
        self.total = 0
        self.applied: list[Any] = []

    def apply_batch(self, commands: list[Any]) -> list[Any]:
        results = []
        for amount in commands:
            self.total += amount
            self.applied.append(amount)
            results.append(self.total)
        return results


C = 1 << 62


def test_a_first_request_starts_a_session_and_applies() -> None:
    table, sm = SessionTable(), Counter()
    assert table.apply(C, 1, 0, 1000, [1, 2, 3], sm.apply_batch) == [1, 3, 6]
    assert sm.applied == [1, 2, 3]
    assert table.get(C) == Session(1, 1000, [1, 3, 6])


def test_a_repeated_request_returns_the_original_results_and_applies_nothing() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [1, 2], sm.apply_batch)
    assert table.apply(C, 1, 0, 2000, [1, 2], sm.apply_batch) == [1, 3]
    assert sm.applied == [1, 2]
    # A repeat shows the client is alive.
    assert table.get(C) == Session(1, 2000, [1, 3])


def test_a_retry_after_a_cut_applies_only_the_missing_positions() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [10, 20], sm.apply_batch)
    # The log was cut after position 1; the client sends the whole request again.
    assert table.apply(C, 1, 0, 1500, [10, 20, 30, 40], sm.apply_batch) == [10, 30, 60, 100]
    assert sm.applied == [10, 20, 30, 40]
    # The retry's tail, arriving in a batch of its own, is a duplicate too.
    assert table.apply(C, 1, 2, 1500, [30, 40], sm.apply_batch) == [60, 100]
    assert sm.applied == [10, 20, 30, 40]


def test_a_request_in_two_applier_batches_continues_where_the_first_stopped() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [1, 1], sm.apply_batch)
    assert table.apply(C, 1, 2, 1000, [1, 1], sm.apply_batch) == [3, 4]
    assert table.get(C) == Session(1, 1000, [1, 2, 3, 4])


def test_a_new_request_forgets_the_old_results() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [1, 1, 1], sm.apply_batch)
    assert table.apply(C, 5, 0, 2000, [7], sm.apply_batch) == [10]
    assert table.get(C) == Session(5, 2000, [10])


def test_an_older_request_is_stale_and_not_applied() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [1], sm.apply_batch)
    table.apply(C, 2, 0, 1000, [2], sm.apply_batch)
    assert table.apply(C, 1, 0, 3000, [1, 1], sm.apply_batch) == [STALE, STALE]
    assert sm.applied == [1, 2]
    assert table.get(C) == Session(2, 3000, [3])


def test_positions_that_skip_ahead_are_refused() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 1000, [1], sm.apply_batch)
    assert table.apply(C, 1, 2, 1000, [5], sm.apply_batch) == [STALE]
    assert table.apply(C, 2, 1, 1000, [5], sm.apply_batch) == [STALE]
    assert sm.applied == [1]
    assert table.get(C) == Session(1, 1000, [1])


def test_an_unknown_client_past_its_first_request_has_an_expired_session() -> None:
    table, sm = SessionTable(), Counter()
    assert table.apply(C, 2, 0, 1000, [1, 1], sm.apply_batch) == [SESSION_EXPIRED] * 2
    # Not the start of a first request either: its start applied under a lost session.
    assert table.apply(C, 1, 1, 1000, [1], sm.apply_batch) == [SESSION_EXPIRED]
    assert sm.applied == [] and C not in table


def test_an_expiry_entry_drops_the_sessions_idle_for_longer_than_its_limit() -> None:
    table, sm = SessionTable(), Counter()
    for client, stamp in [(1, 1000), (2, 5000), (3, 9000)]:
        table.apply(client, 1, 0, stamp, [1], sm.apply_batch)
    assert not table.idle(6000, 5000)
    assert table.idle(6001, 5000)
    assert table.expire(10_000, 5000) == 1
    assert list(table) == [2, 3]
    # Exactly at the limit is not over it.
    assert table.expire(10_000, 5000) == 0
    assert table.expire(20_000, 0) == 2 and len(table) == 0
    # Afterwards a client's next request finds its session gone.
    assert table.apply(2, 2, 0, 20_000, [1], sm.apply_batch) == [SESSION_EXPIRED]


def test_stamps_never_move_a_session_back_in_time() -> None:
    # Leaders' clocks differ: a later entry may carry an earlier stamp.
    table, sm = SessionTable(), Counter()
    table.apply(C, 1, 0, 5000, [1], sm.apply_batch)
    table.apply(C, 2, 0, 4000, [1], sm.apply_batch)
    assert table.get(C) == Session(2, 5000, [2])


def test_encode_and_decode_round_trip() -> None:
    table, sm = SessionTable(), Counter()
    table.apply(1, 1, 0, 1000, [1, 2], sm.apply_batch)
    table.apply((1 << 63) - 1, 7, 0, 2000, [3], sm.apply_batch)
    table.apply(0, 1, 0, 3000, [], sm.apply_batch)
    copy = SessionTable.decode(table.encode())
    assert copy == table and list(copy) == list(table)
    assert copy.get(1) == Session(1, 1000, [1, 3])
    assert SessionTable.decode(SessionTable().encode()) == SessionTable()
    # A snapshot from before sessions existed.
    assert SessionTable.decode(b"") == SessionTable()


@pytest.mark.parametrize("data", [
    b"\xff",
    cbor2.dumps(["raft-trio-kv", 1, []]),
    cbor2.dumps(["raft-trio-sessions", 2, []]),
    cbor2.dumps(["raft-trio-sessions", 1, {}]),
    cbor2.dumps(["raft-trio-sessions", 1, [[1, 1, 1]]]),
    cbor2.dumps(["raft-trio-sessions", 1, [[1, "1", 1, []]]]),
    cbor2.dumps(["raft-trio-sessions", 1, [[1, 1, 1, []], [1, 2, 2, []]]]),
])
def test_decode_refuses_what_encode_cannot_write(data: bytes) -> None:
    with pytest.raises(ValueError):
        SessionTable.decode(data)


Run = tuple[int, int, int, int, list[int]]
EXPIRE_EVERY = 10  # the batching test expires idle sessions after every 10th run
IDLE_LIMIT = 300


def _random_requests(rng: random.Random) -> list[Run]:
    """Session runs as a log may hold them: requests in order per client, some tried
    several times, a try cut after a prefix of its positions, runs interleaved. Every
    command is a different number, so that the state machine's record shows which
    command of which request was applied."""
    log: list[Run] = []
    seqs = {client: 0 for client in (11, 22, 33)}
    stamp = 0
    for request in range(60):
        client = rng.choice(list(seqs))
        seqs[client] += 1
        commands = [1000 * request + pos + 1 for pos in range(rng.randrange(1, 6))]
        for _ in range(rng.randrange(1, 4)):
            stamp += rng.randrange(0, 50)
            kept = rng.randrange(1, len(commands) + 1)
            log.append((client, seqs[client], 0, stamp, commands[:kept]))
        if rng.random() < 0.2:
            log.append((client, seqs[client] - 1, 0, stamp, commands))  # a stale one
    return log


def _exactly_once_model(log: list[Run]) -> tuple[list[int], list[Any]]:
    """What applying `log` must do, worked out per request rather than per position:
    (the commands applied, in order; the result of each command of each run). A client's
    session lives from its request 1 until it has been idle for more than IDLE_LIMIT at
    an expiry; a request's commands apply once each, in order, the first time a try
    reaches them under a live session; a try of an older request is stale; a request
    after the first with no live session is refused, and so is every later one."""
    applied: list[int] = []
    results: list[Any] = []
    alive: dict[int, tuple[int, int, list[int]]] = {}  # client -> seq, newest stamp, results
    for n, (client, seq, pos, stamp, commands) in enumerate(log):
        assert pos == 0
        if client not in alive and seq == 1:
            alive[client] = (seq, stamp, [])
        if client not in alive:
            results += [SESSION_EXPIRED] * len(commands)
        else:
            current, active, done = alive[client]
            if seq < current:
                results += [STALE] * len(commands)
            else:
                if seq > current:
                    current, done = seq, []
                for command in commands[len(done):]:
                    applied.append(command)
                    done.append(sum(applied))
                results += done[: len(commands)]
            alive[client] = (current, max(active, stamp), done)
        if n % EXPIRE_EVERY == EXPIRE_EVERY - 1:
            alive = {c: s for c, s in alive.items() if s[1] >= stamp - IDLE_LIMIT}
    return applied, results


@pytest.mark.parametrize("seed", range(20))
def test_the_table_depends_only_on_the_log_however_it_is_cut_into_batches(seed: int) -> None:
    rng = random.Random(seed)
    log = _random_requests(rng)

    def run(split: bool, snapshot_at: int | None) -> tuple[SessionTable, Counter, list[Any]]:
        table, sm = SessionTable(), Counter()
        results: list[Any] = []
        for n, (client, seq, pos, stamp, commands) in enumerate(log):
            if n == snapshot_at:
                table = SessionTable.decode(table.encode())
            if split and len(commands) > 1:
                cut = rng.randrange(1, len(commands))
                results += table.apply(client, seq, pos, stamp, commands[:cut], sm.apply_batch)
                results += table.apply(client, seq, pos + cut, stamp, commands[cut:],
                                       sm.apply_batch)
            else:
                results += table.apply(client, seq, pos, stamp, commands, sm.apply_batch)
            if n % EXPIRE_EVERY == EXPIRE_EVERY - 1:
                table.expire(stamp, IDLE_LIMIT)
        return table, sm, results

    # Checked against a model that knows nothing of positions, batches or snapshots.
    applied, results = _exactly_once_model(log)
    # Retries that apply nothing, and expiry refusing requests, happen in every seed.
    assert len(applied) < sum(len(r[4]) for r in log) and SESSION_EXPIRED in results
    tables = []
    for split, snapshot_at in [(False, None), (True, None), (False, 17), (True, 31)]:
        table, sm, got = run(split, snapshot_at)
        assert sm.applied == applied
        assert got == results
        tables.append(table)
    assert all(table == tables[0] for table in tables)
    # No command applied twice, unless a first request was retried after its session
    # expired (the limit the sessions module names).
    seq_of: dict[int, int] = {}
    for _, seq, _, _, commands in log:
        request = commands[0] // 1000
        seq_of[request] = max(seq, seq_of.get(request, 0))
    twice = {c for c in applied if applied.count(c) > 1}
    assert all(seq_of[c // 1000] == 1 for c in twice), twice


# ------------------------------------------------------------- the applier


def _session_entries(first: int, client: int, seq: int, commands: list[Any],
                     stamp: int = 1000) -> list[Entry]:
    datas = session_datas(client, seq, stamp, list(map(cbor2.dumps, commands)))
    return [Entry(first + pos, 1, EntryKind.SESSION, data) for pos, data in enumerate(datas)]


def test_session_entries_hold_one_cbor_item_each() -> None:
    (entry,) = _session_entries(1, C, 3, [["set", "k", "v"]], stamp=123)
    assert cbor2.loads(entry.data) == [C, 3, 0, 123, ["set", "k", "v"]]
    entries = [*_session_entries(1, C, 3, [["set", "a", "1"], ["del", "a"]]),
               Entry(3, 1, EntryKind.SESSION_EXPIRY, cbor2.dumps([5, 6])),
               Entry(4, 1, EntryKind.NOOP, b"")]
    decoded, clean = decode_entries(entries, {e.kind for e in entries})
    assert clean and decoded == [[C, 3, 0, 1000, ["set", "a", "1"]],
                                 [C, 3, 1, 1000, ["del", "a"]], [5, 6], None]
    assert decode_commands(entries)[1] is False


def _log_of_tries(rng: random.Random) -> list[Entry]:
    """SESSION entries as a leader writes them, with repeated and cut tries, a no-op
    and an expiry entry or two among them."""
    entries: list[Entry] = []
    seqs = {client: 0 for client in (7, 8, 9)}
    for _ in range(40):
        client = rng.choice(list(seqs))
        seqs[client] += 1
        # True if it runs once, False if it runs again.
        commands = [["cas", f"once-{client}-{seqs[client]}", None, "x"]]
        commands += [["set", f"{client}-{rng.randrange(5)}", str(i)]
                     for i in range(rng.randrange(0, 8))]
        for _ in range(rng.randrange(1, 3)):
            kept = commands[: rng.randrange(1, len(commands) + 1)]
            entries += _session_entries(len(entries) + 1, client, seqs[client], kept,
                                        stamp=len(entries))
        roll = rng.random()
        if roll < 0.05:
            entries.append(Entry(len(entries) + 1, 1, EntryKind.NOOP, b""))
        elif roll < 0.1:
            entries.append(Entry(len(entries) + 1, 1, EntryKind.SESSION_EXPIRY,
                                 cbor2.dumps([len(entries), rng.choice([10, 40])])))
        elif roll < 0.15:
            entries.append(Entry(len(entries) + 1, 1, EntryKind.COMMAND,
                                 cbor2.dumps(["set", "plain", str(len(entries))])))
    return entries


def _apply_in_batches(tmp_path: Path, entries: list[Entry], cuts: list[int]
                      ) -> tuple[RaftServer, list[Any]]:
    server = RaftServer(1, {1: "127.0.0.1:1"}, tmp_path, KVStateMachine())
    sm = server.state_machine
    applier = Applier(server, Snapshots(server))
    results: list[Any] = []
    bounds = [0, *sorted(cuts), len(entries)]
    for start, stop in itertools.pairwise(bounds):
        if start < stop:
            results += applier.apply_entries(entries[start:stop], sm.apply,
                                             sm.apply_batch)  # type: ignore[attr-defined]
    return server, results


@pytest.mark.parametrize("seed", range(10))
def test_the_applier_gives_the_same_outcome_however_the_log_is_batched(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    entries = _log_of_tries(rng)
    one_by_one, expected = _apply_in_batches(tmp_path, entries, list(range(1, len(entries))))
    cuttings = [[], rng.sample(range(1, len(entries)), 5), rng.sample(range(1, len(entries)), 30)]
    for slow in (False, True):
        if slow:
            # Without the shortcut for batches of SESSION entries alone.
            monkeypatch.setattr("raft_trio.server.applier.split_sessions", lambda datas: None)
        for cuts in cuttings:
            server, results = _apply_in_batches(tmp_path, entries, cuts)
            assert results == expected
            assert server.sessions == one_by_one.sessions
            assert server.state_machine.data == one_by_one.state_machine.data  # type: ignore[attr-defined]
    # Each request's cas ran once: a second run would have answered False.
    cas_results = [r for e, r in zip(entries, expected, strict=True)
                   if e.kind == EntryKind.SESSION and cbor2.loads(e.data)[2] == 0]
    assert False not in cas_results


def test_a_malformed_session_entry_gets_an_error_and_the_rest_go_on(tmp_path: Path) -> None:
    entries = [Entry(1, 1, EntryKind.SESSION, cbor2.dumps(["not", "a", "session"])),
               Entry(2, 1, EntryKind.SESSION, b"\xff"),
               *_session_entries(3, C, 1, [["set", "a", "1"]])]
    server, results = _apply_in_batches(tmp_path, entries, [])
    assert results[0][0] == "error" and "malformed" in results[0][1]
    assert results[1][0] == "error" and "undecodable" in results[1][1]
    assert results[2] is None
    assert server.state_machine.data == {"a": "1"}  # type: ignore[attr-defined]


def test_splitting_session_entries_decodes_only_their_commands() -> None:
    entries = [*_session_entries(1, C, 3, [["set", f"k{i}", "v"] for i in range(30)]),
               *_session_entries(31, C, 3, [["set", "x", "y"]] * 3),  # a retry, cut short
               *_session_entries(34, 5, 1, [["del", "k"]], stamp=2000)]
    datas = [e.data for e in entries]
    split = split_sessions(datas)
    assert split is not None
    runs, commands = split
    assert runs == [(0, C, 3, 0, 1000), (30, C, 3, 0, 1000), (33, 5, 1, 0, 2000)]
    assert commands == [cbor2.loads(d)[4] for d in datas]
    # Starting mid-request, across the positions where their encoding grows.
    assert split_sessions(datas[20:26]) == ([(0, C, 3, 20, 1000)],
                                             [["set", f"k{i}", "v"] for i in range(20, 26)])
    # Anything not as the server writes it is left to the whole decode.
    assert split_sessions([cbor2.dumps([C, 3, 0, 1000])]) is None
    assert split_sessions([datas[0], datas[0][:-1]]) is None
    assert split_sessions([cbor2.dumps([C, 3, 1 << 40, 1000, 1])]) is None
    noncanonical = b"\x85\x19\x00\x05" + datas[-1][2:]  # client 5 in three bytes
    assert cbor2.loads(noncanonical)[0] == 5
    assert split_sessions([noncanonical]) is None
