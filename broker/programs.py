"""Finding the Mosquitto programs (the daemon, `mosquitto_passwd`) on this machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable


def find_program(name: str, directories: Iterable[str]) -> str | None:
    """Path of the executable `name`: PATH first, then `directories` (package managers put
    some Mosquitto programs in sbin, which is not on every user's PATH); None if absent."""
    on_path = shutil.which(name)
    if on_path:
        return on_path
    for directory in directories:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None
