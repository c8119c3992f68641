"""Generated gRPC / protobuf stubs for recmesh.v1 (run `python -m devtools.protos`)."""
