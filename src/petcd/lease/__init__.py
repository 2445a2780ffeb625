"""Leases: TTLs, keep-alives and expiry through the log (etcd's lessor).

- `lessor.Lessor`: the lease state (replicated: ID, TTL, keys; leader-local: expiry
  heap) and the KV store's lease hook.
- `apply.LeaseApplier`: applies LeaseGrant / LeaseRevoke / LeaseCheckpoint entries.
- `driver.LeaseDriver`: leadership (promote/demote), expiry proposals, renewals on
  the leader, forwarding from followers; what the API layer talks to.
- `ids.LeaseIdGenerator`: server-chosen lease IDs.
"""
