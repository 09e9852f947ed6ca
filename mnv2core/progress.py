"""Where long work reports its progress: the ``mnv2bench`` loggers' INFO lines (epochs, cache
builds) appended to a run's ``progress.log``, each line naming the process that wrote it."""
from __future__ import annotations

import logging
import os
from pathlib import Path


def log_progress_to(path: Path, who: str) -> None:
    """Append this process's ``mnv2bench`` INFO lines to ``path``, tagged ``who``: once per
    process and path (a new path replaces the last)."""
    logger = logging.getLogger("mnv2bench")
    logger.setLevel(logging.INFO)
    target = os.path.abspath(path)
    for handler in [h for h in logger.handlers if getattr(h, "_mnv2", False) and h.baseFilename != target]:
        logger.removeHandler(handler)  # an earlier run's log (a cluster worker serves run after run)
        handler.close()
    if not any(getattr(h, "_mnv2", False) for h in logger.handlers):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {who} %(name)s: %(message)s"))
        handler._mnv2 = True
        logger.addHandler(handler)
