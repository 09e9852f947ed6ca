"""The harness as a pytest plugin. Before anything imports torch, a grid run (``pytest
benchmarks``) pins the math kernels its profile asks for (``mnv2core.kernels``): here in the
controller, and through the environment it hands them, in every xdist worker."""
import os
import sys
from pathlib import Path

from mnv2core import kernels

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"

if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's argv does not name the profile: the controller's choice
    kernels.pin(os.environ.get(kernels.CHOSEN, "native"))
elif kernels.runs_the_grid(sys.argv[1:], BENCHMARKS):
    os.environ[kernels.CHOSEN] = kernels.requested(sys.argv[1:], os.environ)
    kernels.pin(os.environ[kernels.CHOSEN])

pytest_plugins = ["fixtures.plugin"]
