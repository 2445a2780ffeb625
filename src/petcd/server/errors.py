"""Errors that keep a member from starting. They end the process with a message (cli/server.py,
`petcdctl snapshot restore`); what a client can receive is in petcd.errors instead."""


class BootstrapError(Exception):
    """The flags, the data directory or the peers do not describe a cluster this member
    can start in."""
