"""A state machine of your own, with an application service, in a three-member cluster.

    python examples/services.py

The state machine counts ticks. The service adds a task that runs only on the
leader and proposes a tick every 0.1 s, and a client op, "ticks", that the
leader answers with a linearizable read of the count. When leadership moves,
the task stops on the old leader and starts on the new one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio

import raft_trio
from raft_trio.server import Member


class Ticks:
    """Counts ["tick", member id] commands; the query "count" reads the count, "by"
    the member that proposed the last tick. A real one would also snapshot."""

    def __init__(self) -> None:
        self.count = 0
        self.by: int | None = None

    def apply(self, command: Any) -> Any:
        if not (isinstance(command, list) and len(command) == 2 and command[0] == "tick"):
            return ["error", f"not a tick: {command!r:.40}"]
        self.count += 1
        self.by = command[1]
        return self.count

    def query(self, query: Any) -> Any:
        return {"count": self.count, "by": self.by}.get(query)


async def tick_while_leading(member: Member) -> None:
    while True:
        await member.propose(["tick", member.id])
        await trio.sleep(0.1)


async def ticks(member: Member, args: list[Any]) -> Any:
    return await member.read("count")


TICKER = raft_trio.Service("ticker", ops={"ticks": ticks}, lead=tick_while_leading)


async def main() -> None:
    cluster = {1: "127.0.0.1:7111", 2: "127.0.0.1:7112", 3: "127.0.0.1:7113"}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            i: raft_trio.RaftServer(i, cluster, Path(tmp) / f"member-{i}", Ticks(),
                                    services=[TICKER])
            for i in cluster
        }
        async with trio.open_nursery() as nursery:
            for server in servers.values():
                await nursery.start(server.serve)
            leader = await servers[1].wait_for_leader()
            print(f"member {leader} leads")

            async with raft_trio.RaftClient(list(cluster.values())) as client:
                await trio.sleep(0.5)
                print("ticks so far:", await client.call("ticks"))
                print("last ticked by member", await client.read("by"))

                successor = next(i for i in cluster if i != leader)
                await client.transfer_leadership(successor)
                print(f"leadership handed to member {successor}")
                await trio.sleep(0.5)
                print("ticks so far:", await client.call("ticks"))
                print("last ticked by member", await client.read("by"))

            nursery.cancel_scope.cancel()
    print("all members stopped")


if __name__ == "__main__":
    trio.run(main)
