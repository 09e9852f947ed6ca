"""Seeds derived from the profile's seed, so every artifact has its own reproducible one."""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any

import numpy as np
import torch


def derive_seed(*parts: Any) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) % (2 ** 31)


def seed_everything(seed: int) -> None:
    """Seed every generator a build may draw from (torch's CPU and CUDA ones, Python's, NumPy's)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


@contextlib.contextmanager
def rng_preserved():
    """Give every generator a build may draw from (torch's CPU and CUDA ones, Python's,
    NumPy's) back the state it had on entry: a nested fetch (the pretext weights inside a
    fine-tuning's build) then leaves its caller's draws alike whether it built or loaded."""
    states = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
              random.getstate(), np.random.get_state())
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        if states[1] is not None:
            torch.cuda.set_rng_state_all(states[1])
        random.setstate(states[2])
        np.random.set_state(states[3])
