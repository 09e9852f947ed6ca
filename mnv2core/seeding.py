"""Seeds derived from the profile's seed, so every artifact has its own reproducible one."""
from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) % (2 ** 31)
