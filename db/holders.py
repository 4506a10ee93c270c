"""Who holds a claim or a lease, in the words an operator reading the tables needs."""

from __future__ import annotations

import os
import socket


def holder_id() -> str:
    """``host:pid`` of this process: enough to find the holder of a worklist claim, a result
    delivery claim or a service lease (cut to the columns' 255 characters)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


__all__ = ["holder_id"]
