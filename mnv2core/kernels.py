"""Which math kernels torch runs on the CPU. ``native`` lets ATen, oneDNN and MKL pick by the
CPU's ISA (AVX-512, AMX...): fastest, but each ISA rounds differently, and a short training on
little data amplifies that into points of accuracy between CPUs. ``portable`` pins all three
to their AVX2 kernels, which every x86-64 CPU this project runs on has, so that a profile's
numbers can be compared across them (at about a third more conv time). MKL honours its AVX2
branch on Intel CPUs only (on AMD it dispatches as AUTO); ``kernel_probe`` records which bits
each training op computes, so two runs can be told apart op by op.

The pins are environment variables read when torch loads its libraries, so they are set
before torch is imported: by the root conftest.py (the pytest controller and every xdist
worker), from the profile's ``kernels`` key. This module does not import torch.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("native", "portable")
PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
CHOSEN = "MNV2BENCH_KERNELS_CHOSEN"  # the controller's choice, inherited by its workers


def runs_the_grid(args: Sequence[str], benchmarks: Path) -> bool:
    """Whether a pytest command line runs the grid (names a path in ``benchmarks``)."""
    return any(Path(str(arg).split("::")[0]).resolve().is_relative_to(benchmarks)
               for arg in args if not str(arg).startswith("-"))


def requested(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The ``kernels`` of the profile a pytest command line (or MNV2BENCH_PROFILE) names;
    ``native`` when it names none or the profile cannot be read (the plugin reports that)."""
    name = environ.get("MNV2BENCH_PROFILE", "smoke")
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--profile="):
            name = arg.split("=", 1)[1]
    try:
        return profile_kernels(name)
    except (OSError, tomllib.TOMLDecodeError, RecursionError):
        return "native"


def profile_kernels(name: str, depth: int = 0) -> str:
    """The profile's ``kernels`` key, through its ``extends`` chain."""
    path = Path(name) if name.endswith(".toml") else PROFILE_DIR / f"{name}.toml"
    raw = tomllib.loads(path.read_text())
    if "kernels" in raw or "extends" not in raw or depth > 16:
        return str(raw.get("kernels", "native"))
    base = str(raw["extends"])
    relative = path.parent / base
    return profile_kernels(str(relative) if base.endswith(".toml") and relative.is_file() else base, depth + 1)


def pin(kind: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``kind``'s environment variables (before torch is imported); what was set."""
    environ = os.environ if environ is None else environ
    pins = PORTABLE if kind == "portable" else {}
    environ.update(pins)
    return dict(pins)


def in_effect() -> dict[str, Any]:
    """What this process runs: the ISA ATen dispatches to and the pins in its environment."""
    import torch

    return {"cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            **{name: os.environ.get(name, "") for name in PORTABLE}}


def problem(kind: str) -> str | None:
    """Why this process does not run ``kind``'s kernels (torch imported before the pins), or None."""
    if kind != "portable":
        return None
    effect = in_effect()
    wrong = {k: v for k, v in effect.items() if k != "cpu_capability" and v != PORTABLE[k]}
    if effect["cpu_capability"] != "AVX2" or wrong:
        return (f"kernels = \"portable\" asked for, but this process runs {effect}: torch was imported before the "
                f"pins were set (run through pytest from the project folder, or set {PORTABLE} yourself)")
    return None
