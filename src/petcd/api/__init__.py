"""Client-facing endpoints: the gRPC services and the HTTP/1.1 endpoints, sharing
the client port through `petcd.api.mux`."""
