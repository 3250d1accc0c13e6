"""Run a three-member raft-trio cluster inside one Trio program and use it.

    python examples/embedded.py

Each member is a RaftServer started in the program's own nursery; cancelling
the nursery shuts them all down cleanly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

import raft_trio


async def main() -> None:
    cluster = {1: "127.0.0.1:7101", 2: "127.0.0.1:7102", 3: "127.0.0.1:7103"}
    with tempfile.TemporaryDirectory() as tmp:
        servers = [
            raft_trio.RaftServer(
                node_id=i, cluster=cluster, data_dir=Path(tmp) / f"member-{i}",
                state_machine=raft_trio.KVStateMachine(),
            )
            for i in cluster
        ]
        async with trio.open_nursery() as nursery:
            for server in servers:
                await nursery.start(server.serve)  # returns once listening
            leader_id = await servers[0].wait_for_leader()
            leader = servers[leader_id - 1]
            print(f"member {leader_id} leads")

            # In-process: propose straight to the leader's server object.
            await leader.propose(["set", "greeting", "hello"])

            # Over TCP, as any other program would: the client finds the leader itself.
            async with raft_trio.connect(list(cluster.values())) as client:
                await client.set_many([("a", "1"), ("b", "2")])
                print("greeting =", await client.get("greeting"))
                print("cas a 1->3:", await client.cas("a", "1", "3"))
                print("a =", await client.get("a"))

            try:
                follower = next(s for s in servers if s is not leader)
                await follower.propose(["set", "x", "y"])
            except raft_trio.NotLeader as exc:
                print("a follower refuses:", exc)

            nursery.cancel_scope.cancel()  # clean shutdown of every member
    print("all members stopped")


if __name__ == "__main__":
    trio.run(main)
