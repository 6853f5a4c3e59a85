"""Writing files so that a kill at any moment leaves the old file or the complete new one."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import IO


def atomic_write(path: str, write: Callable[[IO], object], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    The folder is created if needed; the temporary file is removed if writing fails.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: json.dump(data, f, indent=2), "w")
