"""livecode: WebSocket-first real-time code execution server."""

__version__ = "0.1.0"
