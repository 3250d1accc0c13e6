"""`raft-trio stress` beyond the passing runs of test_cli: the combinations that used to
fail, a failing step's exit, and Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import (
    PASS_LINE,
    BackgroundRun,
    members_alive_under,
    no_traceback,
    ok,
    raft_parallel,
    show,
    wait_for,
)
from typer.testing import CliRunner

from raft_trio.cli import app
from raft_trio.kv import KVStateMachine

SMALL = ["--entries", "400", "--batch", "20", "--clients", "4"]


# ------------------------------------------------ combinations that used to fail

VARIANTS: dict[str, list[str]] = {
    # Two of three up; the member that joins and leads is the one whose data is deleted.
    "up-2-reconfigure": ["--up", "2", "--reconfigure", "--seed", "0"],
    # The same as processes; here a member of the first configuration loses its data.
    "up-2-reconfigure-processes": ["--up", "2", "--reconfigure", "--processes", "--seed", "1"],
    "servers-1": ["--servers", "1"],
}


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BackgroundRun]]:
    """Started together: they mostly wait on elections."""
    runs: dict[str, BackgroundRun] = {}
    try:
        for name, extra in VARIANTS.items():
            runs[name] = BackgroundRun(tmp_path_factory.mktemp(f"stress-{name}"), "stress",
                                       *SMALL, *extra)
        yield runs
    finally:
        for run in runs.values():
            run.kill()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("up-2")])
def test_two_of_three_up_with_a_reconfiguration_passes(
    variant: str, variant_runs: dict[str, BackgroundRun]
) -> None:
    run = variant_runs[variant]
    proc = run.result(timeout=300)
    out = ok(proc)
    assert len(PASS_LINE.findall(out)) == 10 and "10/10 steps passed" in out, show(proc)
    joined = re.search(r"meanwhile member 4 joined, took over leadership, and member (\d) was "
                       r"removed", out)
    assert joined, show(proc)
    removed = int(joined.group(1))
    survivor = 3 - removed  # 1 or 2: whichever of the two first members did not lead
    victim = re.search(r"member (\d)'s data deleted", out)
    assert victim, show(proc)
    # The seeds are chosen so that both kinds of member lose their data once.
    expected = 4 if variant == "up-2-reconfigure" else survivor
    assert int(victim.group(1)) == expected, show(proc)
    assert f"member {expected} rebuilt" in out, show(proc)
    assert run.temp_dirs() == [], run.temp_dirs()


def test_one_server_skips_the_steps_that_delete_its_data(
    variant_runs: dict[str, BackgroundRun],
) -> None:
    run = variant_runs["servers-1"]
    proc = run.result(timeout=300)
    out = ok(proc)
    assert len(PASS_LINE.findall(out)) == 6, show(proc)
    assert "FAIL" not in out, show(proc)
    skipped = re.findall(r"^\s*SKIP\b(.*)$", out, re.MULTILINE)
    assert len(skipped) == 4 and all("only member" in reason for reason in skipped), show(proc)
    assert "6/10 steps passed, 4 skipped" in out, show(proc)
    for number in range(1, 11):  # each step is named once
        assert len(re.findall(rf"^\s*{number}\. ", out, re.MULTILINE)) == 1, show(proc)
    assert run.temp_dirs() == [], run.temp_dirs()


# --------------------------------------------------------------- a failing step


class _LosesOneWrite(KVStateMachine):
    """A member whose state machine drops one client's first write."""

    def apply_batch(self, commands: list[Any]) -> list[Any]:
        kept = [c for c in commands if not (type(c) is list and c[:2] == ["set", "s0-0"])]
        results = super().apply_batch(kept)
        return results + [None] * (len(commands) - len(kept))


def test_a_failing_step_fails_the_command_and_keeps_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[KVStateMachine] = []

    def state_machine() -> KVStateMachine:
        # The first member started gets the faulty one.
        sm = KVStateMachine() if made else _LosesOneWrite()
        made.append(sm)
        return sm

    monkeypatch.setattr("stress.cluster.KVStateMachine", state_machine)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(app, ["stress", *SMALL, "--log-level", "error"])
    out = result.output
    assert result.exit_code == 1, out
    assert result.exception is None or isinstance(result.exception, SystemExit), out
    assert re.search(r"^\s*FAIL .*member states differ", out, re.MULTILINE), out
    assert len(PASS_LINE.findall(out)) == 3 and len(re.findall(r"^\s*SKIP", out, re.M)) == 6, out
    assert "3/10 steps passed, 1 failed, 6 skipped" in out, out
    # A failed run keeps its data, and says where.
    (kept,) = tmp_path.glob("raft-trio-stress-*")
    assert f"data kept in {kept}" in out.replace("\n", ""), out
    assert (kept / "member-1").is_dir()


# ------------------------------------------------------------ Ctrl-C and SIGTERM

# Enough that the insertion is still going when the signal comes.
LONG = ["--entries", "200000", "--batch", "10", "--clients", "4"]


@pytest.mark.parametrize(("mode", "signum", "to_group"), [
    # What Ctrl-C in a terminal does: every process of the group gets SIGINT.
    ("processes", signal.SIGINT, True),
    # What `kill PID` does: only the runner hears of it.
    ("processes", signal.SIGTERM, False),
    ("in-process", signal.SIGINT, False),
    ("in-process", signal.SIGTERM, False),
])
def test_a_signal_stops_the_members_and_removes_the_temp_dir(
    tmp_path: Path, mode: str, signum: signal.Signals, to_group: bool
) -> None:
    extra = ["--processes"] if mode == "processes" else []
    run = BackgroundRun(tmp_path, "stress", *LONG, *extra, "--log-level", "error")
    try:
        wait_for("the insertion to start",
                 lambda: None if " 2. Insert" in run.out() else "not yet")
        (data_dir,) = run.tmp.iterdir()
        if mode == "processes":
            assert len(members_alive_under(data_dir)) == 3, run.out()
        if to_group:
            os.killpg(run.proc.pid, signum)
        else:
            run.proc.send_signal(signum)
        proc = run.result(timeout=120)
        # Checked before the clean-up below would stop what the runner left behind.
        assert members_alive_under(tmp_path) == [], show(proc)
        with pytest.raises(ProcessLookupError):
            os.killpg(run.proc.pid, 0)  # nothing left of its process group
    finally:
        run.kill()
    assert proc.returncode == 128 + signum, show(proc)
    no_traceback(proc)
    assert len(proc.stderr.splitlines()) == 1, show(proc)
    assert f"interrupted by {signum.name}" in proc.stderr, show(proc)
    assert "removed" in proc.stderr, show(proc)
    assert "steps passed" not in proc.stdout, show(proc)
    assert run.temp_dirs() == [], show(proc)


def test_a_signal_keeps_a_data_dir_it_was_told_to_keep(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run = BackgroundRun(tmp_path, "stress", *LONG, "--processes", "--keep", "--data-dir",
                        str(data_dir), "--log-level", "error")
    try:
        wait_for("the insertion to start",
                 lambda: None if " 2. Insert" in run.out() else "not yet")
        run.proc.send_signal(signal.SIGINT)
        proc = run.result(timeout=120)
        assert members_alive_under(tmp_path) == [], show(proc)
    finally:
        run.kill()
    assert proc.returncode == 130, show(proc)
    assert len(proc.stderr.splitlines()) == 1, show(proc)
    assert f"data kept in {data_dir}" in proc.stderr, show(proc)
    assert (data_dir / "member-1").is_dir()


def test_a_data_dir_with_members_data_is_refused(tmp_path: Path) -> None:
    """Members would start from the old data: the checks could not tell old entries from new."""
    used = tmp_path / "used"
    (used / "member-1").mkdir(parents=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    results = raft_parallel([["stress", *SMALL, "--data-dir", str(where)]
                             for where in (used, a_file)])
    for proc, mention in zip(results, ("holds members' data", "not a directory"), strict=True):
        assert proc.returncode == 2, show(proc)
        no_traceback(proc)
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, show(proc)
        assert mention in proc.stderr, show(proc)
    assert sorted(p.name for p in used.iterdir()) == ["member-1"]
