"""petcd: etcd v3's API and guarantees, in Python."""

__version__ = "0.1.0"
# The etcd release whose client API petcd speaks; reported by Status and /version.
ETCD_API_VERSION = "3.5.0"
