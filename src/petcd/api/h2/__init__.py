"""petcd's own gRPC server: HTTP/2 (RFC 9113, server side) on asyncio/uvloop, serving
the same grpc.GenericRpcHandler objects as grpc.aio, with HTTP/1.1 on the same
listener. See docs/architecture/h2.md for why it exists."""

from petcd.api.h2.config import ServerConfig
from petcd.api.h2.context import ServerContext
from petcd.api.h2.server import GrpcServer

__all__ = ["GrpcServer", "ServerConfig", "ServerContext"]
