"""A sans-IO Raft core: a pure, deterministic state machine.

No sockets, threads, clocks or files: the caller ticks it, steps messages
into it, proposes data, and takes back Ready batches to persist, send and
apply. Knows nothing of the rest of petcd.
"""
