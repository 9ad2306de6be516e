"""memoryd: shared, token-managed conversation memory for LLM agents (a gRPC sidecar)."""

__version__ = "0.1.0"
