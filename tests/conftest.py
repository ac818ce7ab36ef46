"""Settings every test process shares."""

from __future__ import annotations

import os

# Servers the tests start as subprocesses inherit this: they keep their
# history in memory, not in the repository's .data/ that `make run` uses.
# (tests/server_process.py gives each of its servers a file of its own, and
# in-process servers are built with store="memory".)
os.environ["FLOWMANAGER_STORE"] = "memory"
