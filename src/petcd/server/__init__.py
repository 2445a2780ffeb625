"""The member: proposals, the apply loop, reads, membership. The API layer calls in
through `petcd.server.node.Node`; it never writes storage itself."""
