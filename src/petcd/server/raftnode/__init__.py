"""The Raft driver (etcd's raftNode and the parts of etcdserver around it), one module per
seam: driver (the Ready loop), proposals, applying, reads, snapshots, members, leadership."""

from petcd.server.raftnode.driver import RaftDriver

__all__ = ["RaftDriver"]
