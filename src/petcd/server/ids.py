"""Member and cluster IDs, derived as etcd derives them, so that a petcd member
started with the same --initial-cluster and --initial-cluster-token as an etcd
member reports the same IDs (and they are stable across restarts)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def member_id(peer_urls: Iterable[str], cluster_token: str, now: int | None = None) -> int:
    """First 8 bytes (big-endian) of sha1(sorted peer URLs + token [+ unix time])."""
    data = "".join(sorted(peer_urls)) + cluster_token
    if now is not None:  # members added at runtime get a time-salted ID
        data += str(now)
    return int.from_bytes(hashlib.sha1(data.encode()).digest()[:8], "big")


def cluster_id(member_ids: Iterable[int]) -> int:
    """First 8 bytes of sha1 over the sorted member IDs, each 8 bytes big-endian."""
    data = b"".join(i.to_bytes(8, "big") for i in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")
