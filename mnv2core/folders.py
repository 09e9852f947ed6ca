"""The folders a run writes to (results, cache), checked before anything runs: a file where a
folder should be, or a folder that cannot be written, is one line naming the option to fix.
And how a JSON file is written into one whole (readers never see half of it)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

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


def write_json_atomic(path: Path, document: Any) -> None:
    """Readers never see a half-written file: write a temp file, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, indent=1, sort_keys=False)
            out.write("\n")
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes it private; these files are shared
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
