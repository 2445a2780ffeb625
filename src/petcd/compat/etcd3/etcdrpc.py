"""python-etcd3's `etcd3.etcdrpc`: etcd's wire messages and stubs (petcd.pb's)."""

from petcd.pb.authpb.auth_pb2 import *  # noqa: F403
from petcd.pb.etcdserverpb.rpc_pb2 import *  # noqa: F403
from petcd.pb.etcdserverpb.rpc_pb2_grpc import *  # noqa: F403
from petcd.pb.mvccpb.kv_pb2 import *  # noqa: F403
