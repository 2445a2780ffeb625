"""Snapshot files in and out: etcd's bbolt format (`bbolt`), and the conversions between
an etcd backend and petcd's (`etcd`), for migration both ways."""
