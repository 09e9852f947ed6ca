"""The folders a run writes to (results, cache), checked before anything runs: a file where a
folder should be, or a folder that cannot be written, is one line naming the option to fix."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import ConfigError


def writable_folder(path: str | Path, option: str, variable: str) -> Path:
    """``path``, made if missing, once a file could be written in it; else ConfigError naming
    ``option`` (and its environment ``variable``)."""
    path = Path(path)
    fix = f"point {option} (or {variable}) at a folder you can write"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: not a writable folder (a file is there); {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: not a writable folder ({exc.strerror or exc}); {fix}") from None
    return path
