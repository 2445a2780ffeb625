"""Compatibility layers for code written against other etcd client libraries."""
