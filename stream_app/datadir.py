"""Where a sink keeps its spool when no data dir is given.

/var/lib/mirrorscope is the service's place (the chart mounts a volume there, and a package
would create it for its user); a user who cannot write there, as any non-root user on a
fresh host, gets $XDG_STATE_HOME/mirrorscope (~/.local/state/mirrorscope) instead of a
PermissionError at the first spooled file."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DATA_DIR = Path("/var/lib/mirrorscope")


def default_data_dir(environ=None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("MIRRORSCOPE_DATA_DIR"):
        return Path(env["MIRRORSCOPE_DATA_DIR"])
    if SYSTEM_DATA_DIR.is_dir() and os.access(SYSTEM_DATA_DIR, os.W_OK | os.X_OK):
        return SYSTEM_DATA_DIR
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mirrorscope"
