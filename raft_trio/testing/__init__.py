"""Tools for testing systems built on raft-trio; pure Python, usable without a running cluster.

`raft_trio.testing.linearizability` checks recorded client histories of the key-value
state machine (set/get/delete/cas) for linearizability.
"""
