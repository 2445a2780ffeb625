"""etcd's HTTP/JSON gateway: `/v3/...` paths on the client URLs, translated to calls of
the member's own gRPC handlers (routes.py: the path table; jsonpb.py: JSON as
grpc-gateway writes it; dispatch.py: calls, streams, errors)."""

from petcd.api.gateway.dispatch import Gateway, error_reply
from petcd.api.gateway.routes import ROUTES, Route

__all__ = ["ROUTES", "Gateway", "Route", "error_reply"]
