"""Where long work reports its progress: the ``mnv2bench`` loggers' INFO lines (epochs, cache
builds) appended to a run's ``progress.log``, each line naming the process that wrote it."""
from __future__ import annotations

import logging
from pathlib import Path


def log_progress_to(path: Path, who: str) -> None:
    """Append this process's ``mnv2bench`` INFO lines to ``path``, tagged ``who`` (once per process)."""
    logger = logging.getLogger("mnv2bench")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_mnv2", False) for h in logger.handlers):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {who} %(name)s: %(message)s"))
        handler._mnv2 = True
        logger.addHandler(handler)
