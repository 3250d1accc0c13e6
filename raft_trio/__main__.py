from raft_trio.cli import main

main()
