"""Fault injection (the "faults" op) and the `raft-trio chaos` command."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from test_cli import (
    BackgroundRun,
    members_alive_under,
    no_traceback,
    ok,
    raft_parallel,
    show,
    wait_for,
)
from test_server import FAST, kv, leader_of, wait_all_applied
from typer.testing import CliRunner

from raft_trio import Role
from raft_trio.cli import app
from raft_trio.client import cluster_status, connect, set_member_faults
from raft_trio.errors import RaftError
from raft_trio.testing.linearizability import Operation, load_history
from stress.chaos import Chaos
from stress.cluster import InProcessCluster, free_ports


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    """Three members that accept the faults op."""
    members = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, FAST, "warning",
                                   fault_injection=True)
        for node_id in members:
            await harness.start(node_id)
        yield harness
        nursery.cancel_scope.cancel()


async def test_faults_op_is_refused_without_fault_injection(tmp_path: Path) -> None:
    members = {1: f"127.0.0.1:{free_ports(1)[0]}"}
    async with trio.open_nursery() as nursery:
        harness = InProcessCluster(nursery, members, tmp_path, FAST, "warning")
        await harness.start(1)
        with pytest.raises(RaftError, match="fault injection is off"):
            await set_member_faults(members[1], [2])
        nursery.cancel_scope.cancel()


async def test_faults_op_checks_its_arguments(faulty: InProcessCluster) -> None:
    address = faulty.members[1]
    for bad in (["two"], [0], [-1]):
        with pytest.raises(RaftError, match="list of member ids"):
            await set_member_faults(address, bad)  # type: ignore[arg-type]
    assert await set_member_faults(address, [3, 2]) == [2, 3]
    assert await set_member_faults(address, []) == []


async def test_a_cut_member_gets_nothing_then_catches_up(faulty: InProcessCluster) -> None:
    leader = await leader_of(faulty)
    term = leader.node.term  # type: ignore[union-attr]
    victim = next(i for i in faulty.running() if i != leader.id)
    others = [i for i in faulty.members if i != victim]
    cut_off = faulty.servers[victim]
    async with connect(list(faulty.members.values()), timeout=20) as client:
        await client.set("before", "1")
        await wait_all_applied(faulty, leader.node.commit)  # type: ignore[union-attr]
        applied = cut_off.last_applied

        # Each end alone cuts the link both ways: first only the victim's end...
        await set_member_faults(faulty.members[victim], others)
        received = cut_off.counters["messages_received"]  # a heartbeat may beat the cut
        await client.set_many([(f"k{i}", str(i)) for i in range(100)])
        await trio.sleep(0.5)  # many heartbeat intervals and election timeouts
        assert cut_off.last_applied == applied
        assert cut_off.counters["messages_received"] == received
        # ... then only the others' ends (cut before the victim's is healed).
        for other in others:
            await set_member_faults(faulty.members[other], [victim])
        await set_member_faults(faulty.members[victim], [])
        await client.set_many([(f"k{i}", str(i)) for i in range(100, 200)])
        await trio.sleep(0.5)
        assert cut_off.last_applied == applied
        assert cut_off.counters["messages_received"] == received
        assert "k0" not in kv(cut_off)
        # The victim's timer fired again and again, but it only asked for pre-votes,
        # none of which arrived: its term never rose.
        assert cut_off.node.term == term  # type: ignore[union-attr]
        assert cut_off.role is Role.PRE_CANDIDATE
        assert leader.node.term == term  # type: ignore[union-attr]
        assert leader.role is Role.LEADER

        for other in others:
            await set_member_faults(faulty.members[other], [])
        await client.set("after", "2")
        # Back, it disturbs nobody: the same leader brings it up to date.
        new_leader = await leader_of(faulty)
        assert new_leader is leader and leader.node.term == term  # type: ignore[union-attr]
        await wait_all_applied(faulty, new_leader.node.commit)  # type: ignore[union-attr]
    assert kv(cut_off) == kv(new_leader)
    assert kv(cut_off)["k199"] == "199" and kv(cut_off)["after"] == "2"


# ------------------------------------------------------------- the command

def chaos_run(root: Path, *args: str, data_dir: bool = True) -> BackgroundRun:
    """`raft-trio chaos ARGS` with its history in root/history.jsonl and, unless
    `data_dir` is false, its data in root/data (else in a temp dir under root/tmp)."""
    where = ["--data-dir", str(root / "data")] if data_dir else []
    return BackgroundRun(root, "chaos", *where, "--history", str(root / "history.jsonl"),
                         *args, merge_stderr=True)


@pytest.mark.slow
def test_chaos_passes_and_leaves_nothing_running(tmp_path: Path) -> None:
    run = chaos_run(tmp_path, "--duration", "30", "--clients", "5",
                   "--nemesis", "kill,partition,pause", "--seed", "1")
    proc = run.result(timeout=300)
    out = ok(proc)
    assert "verdict: PASS" in out, show(proc)
    assert "checker: linearizable" in out, show(proc)
    assert "members' states equal: yes" in out, show(proc)
    for kind in ("kill", "partition", "pause"):
        assert re.search(rf"faults injected:.*\b{kind} [1-9]", out), show(proc)
    assert re.search(r"leader changes: [1-9]", out), show(proc)
    history_file = tmp_path / "history.jsonl"
    history = load_history(history_file)
    assert len(history) > 100 and f"saved to {history_file}" in out
    assert {o.op for o in history} >= {"get", "set", "cas"}
    assert members_alive_under(tmp_path / "data") == []
    logs = "".join(p.read_text() for p in (tmp_path / "data").glob("member-*.log"))
    assert "fault injection: cut off from" in logs


def test_chaos_interrupted_stops_every_member(tmp_path: Path) -> None:
    run = chaos_run(tmp_path, "--duration", "120", "--seed", "3")
    try:
        wait_for("the chaos to start", lambda: None if "chaos for" in run.out() else "not yet")
        assert len(members_alive_under(tmp_path / "data")) == 3, run.out()
        # The runner alone, as if its process got the signal: it must stop its members.
        run.proc.send_signal(signal.SIGINT)
        proc = run.result(timeout=60)
        assert proc.returncode == 130, show(proc)
        assert "interrupted" in proc.stdout, show(proc)
        assert members_alive_under(tmp_path / "data") == [], show(proc)
    finally:
        run.kill()


@pytest.mark.parametrize(("signum", "to_group"), [
    (signal.SIGINT, True),  # Ctrl-C in a terminal: the members get it too
    (signal.SIGTERM, False),  # `kill PID`: only the runner
])
def test_chaos_signalled_stops_every_member_and_removes_its_temp_dir(
    tmp_path: Path, signum: signal.Signals, to_group: bool
) -> None:
    run = chaos_run(tmp_path, "--duration", "120", "--seed", "3", data_dir=False)
    try:
        wait_for("the chaos to start", lambda: None if "chaos for" in run.out() else "not yet")
        (data_dir,) = run.tmp.iterdir()
        assert len(members_alive_under(data_dir)) == 3, run.out()
        if to_group:
            os.killpg(run.proc.pid, signum)
        else:
            run.proc.send_signal(signum)
        proc = run.result(timeout=60)
        # Checked before the clean-up below would stop what the runner left behind.
        assert members_alive_under(data_dir) == [], show(proc)
        with pytest.raises(ProcessLookupError):
            os.killpg(run.proc.pid, 0)  # nothing left of its process group
    finally:
        run.kill()
    assert proc.returncode == 128 + signum, show(proc)
    no_traceback(proc)
    after = proc.stdout.split("chaos for", 1)[1].splitlines()[1:]
    # The timeline may go on for a moment; then one line, the last.
    assert after and after[-1].startswith(f"error: interrupted by {signum.name}"), show(proc)
    assert sum("interrupted" in line for line in after) == 1, show(proc)
    assert "removed" in after[-1], show(proc)
    assert run.temp_dirs() == [], show(proc)


async def _wait_pushed(chaos: Chaos) -> None:
    """Until the runner has told every member its `desired` cut set once more.

    A push round replaces `faults_changed` when it starts; a round that started
    before `desired` changed must be over too, or it could undo the new one.
    """
    seen = chaos.faults_changed
    seen.set()
    for _ in range(2):
        while chaos.faults_changed is seen:
            await trio.sleep(0.01)
        seen = chaos.faults_changed


def test_chaos_fails_on_a_stale_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower cut off by fault injection answers a stale read after a write completed:
    the checker must object and the command exit 1."""
    final_reads = Chaos._final_reads
    probe: dict[str, Any] = {}

    async def stale_read_first(self: Chaos) -> None:
        rows = await cluster_status(self.members, timeout=5.0)
        leader = next(r["id"] for r in rows.values() if r.get("role") == "leader")
        victim = next(i for i in sorted(self.members) if i != leader)
        others = frozenset(self.members) - {victim}
        self.desired[victim] = others
        await _wait_pushed(self)
        key, value = self.keys[0], "written while member was cut off"
        reader = self.o.clients + 1
        call = self.now()
        async with connect([self.members[i] for i in sorted(others)], timeout=20) as client:
            await client.set(key, value)
        self.out.history.append(Operation(reader, "set", key, value, None, call, self.now()))
        call = self.now()
        async with connect([self.members[victim]], timeout=20) as client:
            stale = await client.get(key, mode="stale")
        self.out.history.append(Operation(reader, "get", key, None, stale, call, self.now()))
        probe.update(victim=victim, stale=stale)
        self.desired[victim] = frozenset()
        await _wait_pushed(self)
        await final_reads(self)

    monkeypatch.setattr(Chaos, "_final_reads", stale_read_first)
    result = CliRunner().invoke(app, [
        "chaos", "--duration", "1", "--nemesis", "none", "--clients", "1", "--seed", "5",
        "--data-dir", str(tmp_path / "data"), "--history", str(tmp_path / "history.jsonl"),
        "--log-level", "warning"])
    out = result.output
    assert probe["stale"] != "written while member was cut off", out
    assert result.exit_code == 1, out
    assert result.exception is None or isinstance(result.exception, SystemExit), out
    assert "checker: NOT linearizable" in out, out
    assert "members' states equal: yes" in out, out
    assert "verdict: FAIL" in out, out
    assert f"data kept in {tmp_path / 'data'}" in out, out
    assert members_alive_under(tmp_path / "data") == []


def test_chaos_bad_arguments_give_one_line(tmp_path: Path) -> None:
    used = tmp_path / "used"
    (used / "member-1").mkdir(parents=True)
    cases = [
        (["--nemesis", "kill,flood"], "flood"),
        (["--duration", "0"], "--duration"),
        (["--nemesis", "partition", "--servers", "1"], "partition"),
        (["--data-dir", str(used)], "--data-dir"),
        (["--history", str(tmp_path)], "--history"),
    ]
    results = raft_parallel([["chaos", *args] for args, _ in cases])
    for (_args, mention), proc in zip(cases, results, strict=True):
        assert proc.returncode == 2, show(proc)
        no_traceback(proc)
        assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, show(proc)
        assert proc.stderr.startswith("error: ") and mention in proc.stderr, show(proc)


def test_chaos_help_names_every_option() -> None:
    chaos_help, serve_help = raft_parallel([["chaos", "--help"], ["serve", "--help"]])
    out = ok(chaos_help)
    for option in ("--duration", "--clients", "--nemesis", "--seed", "--servers", "--keys",
                   "--data-dir", "--keep", "--history", "--tick", "--client-timeout"):
        assert option in out, show(chaos_help)
    # Only the chaos runner turns fault injection on; operators are not offered it.
    assert "--fault-injection" not in ok(serve_help)


def test_convergence_needs_one_leader_and_everything_applied() -> None:
    from stress.chaos import _why_not_converged

    def row(node_id: int, role: str = "follower", term: int = 3, leader: int | None = 1,
            commit: int = 10, last: int = 10, applied: int = 10) -> dict[str, Any]:
        return {"id": node_id, "role": role, "term": term, "leader": leader, "commit": commit,
                "last_index": last, "applied": applied}

    good = {1: row(1, "leader"), 2: row(2), 3: row(3)}
    assert _why_not_converged(good) == ""
    cases = [
        ({**good, 1: row(1)}, "0 leaders"),
        ({**good, 2: row(2, "leader", leader=2)}, "2 leaders"),
        ({**good, 1: row(1, "leader", commit=9)}, "committed 9 of 10"),
        ({**good, 3: {"id": 3, "role": "down", "error": "refused"}}, "member 3 is down"),
        ({**good, 2: row(2, term=2)}, "member 2 is at term 2"),
        ({**good, 3: row(3, applied=8)}, "member 3 applied 8 of 10"),
    ]
    for rows, reason in cases:
        assert reason in _why_not_converged(rows)
