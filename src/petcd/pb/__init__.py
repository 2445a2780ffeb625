"""Wire types: etcd's client API (etcdserverpb, mvccpb, authpb, v3lockpb,
v3electionpb) and petcd's internal Raft entry payload (internalpb).

Everything below this package except the .proto files and generate.py is
generated; regenerate with `make proto`.
"""
