"""Member and cluster IDs match etcd's for the same bootstrap flags."""

from __future__ import annotations

import pytest

from petcd.server.errors import BootstrapError
from petcd.server.ids import cluster_id, member_id
from petcd.server.initial_cluster import from_flags
from petcd.server.options import ServerOptions


def test_etcd_default_ids() -> None:
    # What `etcd` with no flags reports (well-known values).
    mid = member_id(["http://localhost:2380"], "etcd-cluster")
    assert mid == 0x8E9E05C52164694D
    assert cluster_id([mid]) == 0xCDF818194E3A8C32


def test_ids_seen_from_real_etcd_3_4() -> None:
    # etcd 3.4.23 --initial-cluster ref=http://127.0.0.1:23801 reported these.
    mid = member_id(["http://127.0.0.1:23801"], "etcd-cluster")
    assert mid == 13668033151171901709
    assert cluster_id([mid]) == 15118495548433857066


def test_bootstrap_checks_like_etcd() -> None:
    info = from_flags(ServerOptions())
    assert info.local_id == 0x8E9E05C52164694D
    with pytest.raises(BootstrapError, match="couldn't find local name"):
        from_flags(ServerOptions(name="x"))
    with pytest.raises(BootstrapError, match="missing from --initial-advertise-peer-urls"):
        from_flags(ServerOptions(initial_advertise_peer_urls=("http://127.0.0.1:1",)))
