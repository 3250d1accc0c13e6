"""What an operator can get wrong from the command line without losing a cluster:
adding a member before it runs, two members on one data directory, a member
restarted at another address."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_cli import RAFT, TIMING, Cluster, Member, ok, raft, short_error, show, wait_for

from stress.cluster import free_ports


def test_adding_a_member_that_is_not_running_never_costs_the_quorum(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    c = Cluster(tmp_path_factory.mktemp("add-before-start"))
    try:
        c.start(1, 2, 3)
        leader, _ = c.wait_stable({1, 2, 3})
        spec = c.spec
        (port,) = free_ports(1)
        address = f"127.0.0.1:{port}"

        # Member 4 is not running: it is added, but stays a learner.
        added = raft("members", "add", "4", address, "--timeout", "3", "--cluster", spec)
        output = short_error(added, 1)
        assert "still a learner" in output or "added as a learner" in output, show(added)
        assert "members promote 4" in output, show(added)
        info: dict[str, Any] = json.loads(ok(raft("members", "list", "--json",
                                                  "--cluster", spec)))
        assert info["learners"] == {"4": address}, info
        assert "4" not in info["voters"], info
        promote = raft("members", "promote", "4", "--timeout", "2", "--cluster", spec)
        assert "has not answered" in short_error(promote, 1), show(promote)

        # A follower dies: the other two of the three voters still commit writes.
        follower = next(i for i in (1, 2, 3) if i != leader)
        c.kill(follower)
        ok(raft("kv", "set", "one-down", "yes", "--cluster", spec))

        # Member 4 starts and asks to join: it catches up and becomes a voter.
        data_dir = c.root / "member-4"
        c.members[4] = Member(4, address, data_dir, c.root / "member-4.log", [
            *RAFT, "serve", "--id", "4", "--join", c.members[leader].address,
            "--address", address, "--data-dir", str(data_dir), *TIMING,
        ])
        c.start(4)

        def voters() -> dict[str, Any]:
            listing: dict[str, Any] = json.loads(ok(raft("members", "list", "--json",
                                                         "--cluster", spec)))
            return listing

        wait_for("member 4 to become a voter",
                 lambda: None if "4" in voters()["voters"] else f"members: {voters()}")
        everyone = f"{spec},4={address}"
        ok(raft("kv", "set", "four-voters", "three up", "--cluster", everyone))

        def member_4_has_it() -> str | None:
            got = raft("kv", "get", "one-down", "--read", "stale", "--cluster", address)
            return None if got.returncode == 0 and got.stdout.strip() == "yes" else show(got)

        wait_for("member 4 to apply what was written while it was a learner", member_4_has_it)

        # --learner: added, not promoted, and that is what was asked for.
        (port_5,) = free_ports(1)
        added = ok(raft("members", "add", "5", f"127.0.0.1:{port_5}", "--learner",
                        "--cluster", everyone))
        assert f"5\t127.0.0.1:{port_5}\tlearner" in added, added
        removed = ok(raft("members", "remove", "5", "--cluster", everyone))
        assert "\n5\t" not in "\n" + removed, removed
    finally:
        c.shutdown()


def test_a_data_dir_serves_one_member_process_at_a_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    c = Cluster(tmp_path_factory.mktemp("one-dir-one-process"))
    try:
        c.start(1)
        member = c.members[1]
        assert member.proc is not None
        # The same member again, bound elsewhere so that the port is no obstacle.
        twin = raft("serve", "--id", "1", "--cluster", c.spec, "--data-dir",
                    str(member.data_dir), "--listen-host", "127.0.0.2", *TIMING)
        output = short_error(twin, 1)
        assert (f"data dir {member.data_dir} is in use by another raft-trio process "
                f"(pid {member.proc.pid})") in output, show(twin)
        # Another member's directory.
        other = raft("serve", "--id", "2", "--cluster", c.spec, "--data-dir",
                     str(member.data_dir), *TIMING)
        assert "in use" in short_error(other, 1), show(other)
        c.stop(1)
        other = raft("serve", "--id", "2", "--cluster", c.spec, "--data-dir",
                     str(member.data_dir), *TIMING)
        assert (f"data dir {member.data_dir} belongs to member 1, not member 2"
                in short_error(other, 1)), show(other)

        # Restarted with another address for itself: refused, naming the one in force.
        (port,) = free_ports(1)
        moved = c.spec.replace(member.address, f"127.0.0.1:{port}")
        restart = raft("serve", "--id", "1", "--cluster", moved, "--data-dir",
                       str(member.data_dir), *TIMING)
        assert (f"its address is {member.address} in the cluster's configuration"
                in short_error(restart, 1)), show(restart)
    finally:
        c.shutdown()
