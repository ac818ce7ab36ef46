"""Execution ids that sort by time: new rows land at the end of the history's indexes.

The history is keyed by execution id (an execution's row, and its events
under (execution_id, sequence)). With random ids (UUIDv4) every execution's
rows land in a random page of each B-tree, so a batch of executions dirties
as many pages as it has executions, and each dirty page is written whole to
the WAL and later to the file. Ids that grow with time append instead: a
batch dirties the last few pages. `time_ordered_id` makes UUIDv7 ids
(RFC 9562): the Unix time in milliseconds, then 74 random bits; unique as
UUIDv4 are, and they still read as UUIDs.
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["time_ordered_id"]


def time_ordered_id() -> str:
    """A new UUIDv7, as text: 48 bits of Unix milliseconds, version, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10))
    value = (millis & (2**48 - 1)) << 80 | random & (2**80 - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant 10
    return str(uuid.UUID(int=value))
