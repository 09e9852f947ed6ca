"""Every technique of the harness, one module each (or one module per family of closely
related ones). Each module registers its techniques with ``registry.register``;
``catalogue()`` imports every module here (``_``-prefixed helpers excepted), so a new
technique is one new module plus the profile lines that ask for it."""
from __future__ import annotations

import functools
import importlib
import pkgutil

from ..registry import REGISTERED, Catalogue


@functools.cache
def catalogue() -> Catalogue:
    """Every registered technique and study (the technique modules are imported once)."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        importlib.import_module(f"{__name__}.{module}")
    return REGISTERED
