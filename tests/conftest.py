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
