"""The artifact cache in a store shared by several machines: S3 (moto's server on 127.0.0.1,
through s3fs) and file:// URLs. Published payload first, manifest last; a reader never takes
a half-published or mismatched entry."""
import json

import pytest
import torch

from mnv2core.cache import ArtifactCache
from mnv2core.keys import ArtifactKey
from mnv2core.store import SharedStore, is_shared, local_path

KEY = ArtifactKey("toy", "toy", {"lr": 0.1}, "code")


def build(counter, value=1.0):
    def make():
        counter.append(1)
        return {"weights": torch.full((2, 3), value)}
    return make


@pytest.fixture
def s3(s3_endpoint, request):
    """An ArtifactCache factory on a fresh s3://bucket/prefix of the local server."""
    url = f"s3://mnv2bench-test/{request.node.name}"
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint,
                                                                        "region_name": "eu-west-1"},
               "skip_instance_cache": True}

    def cache(tmp_path, **kwargs):
        return ArtifactCache(url, files=tmp_path / "files", storage_options=options, **kwargs)
    return cache


def test_an_entry_published_to_s3_is_loaded_by_another_client(s3, tmp_path):
    built = []
    assert not s3(tmp_path).holds(KEY)
    first = s3(tmp_path).fetch(KEY, build(built))
    assert first.status == "built" and str(first.path).startswith("s3://mnv2bench-test/")
    assert s3(tmp_path).holds(KEY) and not s3(tmp_path).holds(ArtifactKey("toy", "toy", {"lr": 0.2}, "code"))
    second = s3(tmp_path).fetch(KEY, build(built))  # another process or machine
    assert second.status == "loaded" and len(built) == 1
    assert torch.equal(second.payload["weights"], torch.full((2, 3), 1.0))
    assert (tmp_path / "files").is_dir()  # ONNX exports, spectra and plots stay on this machine


def test_a_payload_without_its_manifest_is_not_an_entry(s3, tmp_path):
    cache, built = s3(tmp_path), []
    name = KEY.entry
    cache.shared.fs.pipe_file(f"{cache.shared.root}/{name}.deadbeef.pt", b"a writer died before its manifest")
    assert cache.fetch(KEY, build(built)).status == "built" and len(built) == 1


def test_a_payload_that_fails_its_checksum_is_rebuilt(s3, tmp_path, caplog):
    cache, built = s3(tmp_path), []
    cache.fetch(KEY, build(built))
    name = KEY.entry
    manifest = json.loads(cache.shared.fs.cat_file(f"{cache.shared.root}/{name}.json"))
    cache.shared.fs.pipe_file(f"{cache.shared.root}/{manifest['payload']}", b"overwritten")
    assert s3(tmp_path).fetch(KEY, build(built)).status == "built" and len(built) == 2
    assert "does not match its manifest's checksum" in caplog.text
    assert s3(tmp_path).fetch(KEY, build(built)).status == "loaded"


def test_two_writers_of_one_entry_leave_one_complete_entry(s3, tmp_path):
    """Writer A publishes its payload, writer B its payload and manifest, then A its manifest:
    every manifest names its own complete payload, so a reader sees A's or B's, never a mix."""
    store = s3(tmp_path).shared
    a, b = SharedStore(store.url, {"key": "testing", "secret": "testing",
                                   "client_kwargs": store.fs.client_kwargs, "skip_instance_cache": True}), store
    real_pipe = a.fs.pipe_file
    order = []

    def a_pipe(path, data, **kwargs):
        real_pipe(path, data, **kwargs)
        if path.endswith(".pt"):  # A's payload is up: B publishes in between
            b.write("entry", b"from B")
            order.append("B")

    a.fs.pipe_file = a_pipe
    a.write("entry", b"from A")
    order.append("A")
    assert order == ["B", "A"] and b.read("entry") == b"from A"  # the last manifest, with its own payload


def test_file_urls_and_paths_are_local_folders(tmp_path):
    assert not is_shared(tmp_path) and not is_shared(f"file://{tmp_path}") and is_shared("s3://b/p")
    assert local_path(f"file://{tmp_path}") == tmp_path
    built = []
    ArtifactCache(f"file://{tmp_path}").fetch(KEY, build(built))
    assert ArtifactCache(tmp_path).fetch(KEY, build(built)).status == "loaded" and len(built) == 1
