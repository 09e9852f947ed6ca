import socket

import pytest
import torch

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)



@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 endpoint (moto's server on 127.0.0.1; the [test] extra installs it)."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def serial_grid(tmp_path_factory, worker_id):
    """GRID run serially on an empty cache, once per test session (under xdist by the first
    worker that asks; the others wait on its lock and read its results): its records, its
    pytest-benchmark JSON and its cache folder (copy it before changing it)."""
    from types import SimpleNamespace

    from filelock import FileLock
    from test_plugin import GRID, newest_records, run_grid

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    root = shared / "serial-grid"
    with FileLock(str(shared / "serial-grid.lock")):
        if not (root / "complete").exists():
            root.mkdir(exist_ok=True)
            result = run_grid(root, GRID, "serial", "--benchmark-json", str(root / "bench.json"))
            assert result.returncode == 0, result.stdout[-3000:]
            (root / "complete").touch()
    return SimpleNamespace(records=newest_records(root / "results-serial"), bench=root / "bench.json",
                           cache=root / "serial")
