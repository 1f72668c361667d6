"""A free local TCP port, for a child process that must be told its port up front."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now: the kernel's pick for a bind to port 0.

    Free when asked, not reserved: another process may take it before ours binds it.
    For the embedded PostgreSQL (told its port on its command line), tests and
    benchmarks; a server of our own binds port 0 itself and reads the port back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
