"""The folders a run writes to (results, cache), checked before anything runs: a file where a
folder should be, or a folder that cannot be written, is one line naming the option to fix."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("mnv2bench.folders")


def writable_folder(path: str | Path, option: str, variable: str, read_only_ok: bool = False) -> Path:
    """``path``, made if missing, once a file could be written in it; else ConfigError naming
    ``option`` (and its environment ``variable``). ``read_only_ok``: an existing folder that
    cannot be written is fine (a warm cache to read from)."""
    path = Path(path)
    fix = f"point {option} (or {variable}) at a folder you can write"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: not a writable folder (a file is there); {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        if read_only_ok and path.is_dir():
            log.warning("%s %s is read-only: the entries it holds are used, a missing one fails", option, path)
            return path
        raise ConfigError(f"{option} {path}: not a writable folder ({exc.strerror or exc}); {fix}") from None
    return path
