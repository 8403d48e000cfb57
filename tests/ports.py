"""Ports for the servers a test starts in another process (a worker's web server, a sender's
metrics, a private stack).

Asking the kernel for port 0 and handing the number to a child process races: until the child
binds it, the port is free for anyone - and `make test` runs several test processes whose Kafka
clients open outgoing connections from the same ephemeral range (32768-60999 here). One such
race stopped a worker with "address already in use". So each test process takes ports from its
own block below the ephemeral range (pytest-xdist names the process: gw0, gw1, ...), never the
same one twice, and checks that nothing listens there. Test runs started by hand side by side
(outside xdist) each set their own block: ``TUTTI_TEST_PORT_BLOCK=5 pytest ...`` (0-10, below
the ephemeral range).
"""

from __future__ import annotations

import itertools
import os
import socket

__all__ = ["free_port"]

#: Below the ephemeral range and clear of the local stack's defaults (19092-19094, 18081).
_FIRST = 21000
_BLOCK = 1000


def _block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; unset alone
    if worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]) + 1
    return int(os.environ.get("TUTTI_TEST_PORT_BLOCK", "0"))


_candidates = itertools.cycle(range(_FIRST + _block() * _BLOCK, _FIRST + (_block() + 1) * _BLOCK))


def free_port() -> int:
    """A loopback port no other test process hands out and nothing listens on now."""
    for _ in range(_BLOCK):
        port = next(_candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this test process's block from {_FIRST}")
