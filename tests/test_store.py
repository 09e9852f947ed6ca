"""The artifact cache in a store shared by several machines: S3 (moto's server on 127.0.0.1,
through s3fs) and file:// URLs. Published payload first, manifest last; a reader never takes
a half-published or mismatched entry."""
import json
import logging

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
    again = s3(tmp_path)
    with caplog.at_level("WARNING", logger="mnv2bench.cache"):
        assert again.fetch(KEY, build(built)).status == "built" and len(built) == 2
    assert (name.rsplit("-", 1)[0], "corrupt") in again.events  # the run's summary counts it
    if not logging.getLogger("mnv2bench.cache").disabled:  # another library's logging set-up may disable it
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


@pytest.fixture
def impatient(monkeypatch):
    """A store that does not answer is given up on after one second, not a minute."""
    monkeypatch.setenv("MNV2BENCH_STORE_RETRY_S", "1")


def test_a_store_down_from_the_start_stops_in_one_line_naming_it(impatient, tmp_path):
    from mnv2core.errors import StoreUnavailable
    dead = {"key": "k", "secret": "s", "skip_instance_cache": True,
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1"},
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    with pytest.raises(StoreUnavailable) as error:
        ArtifactCache("s3://mnv2bench-test/down", files=tmp_path / "files", storage_options=dead)
    message = str(error.value)
    assert message.startswith("artifact store s3://mnv2bench-test/down did not answer (open: ")
    assert "--cache-dir" in message and "\n" not in message


def outage(store):
    """Every call to ``store``'s file system fails as a lost connection does."""
    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")
    for name in ("cat_file", "pipe_file", "exists", "makedirs"):
        setattr(store.fs, name, refused)


def test_an_outage_is_never_a_corrupt_entry_and_nothing_is_rebuilt_for_it(s3, impatient, tmp_path, caplog):
    from mnv2core.errors import StoreUnavailable
    built = []
    s3(tmp_path).fetch(KEY, build(built))
    cache = s3(tmp_path)
    outage(cache.shared)
    with pytest.raises(StoreUnavailable, match="did not answer \\(read: ConnectionRefusedError"):
        cache.fetch(KEY, build(built))
    assert len(built) == 1 and "is corrupt" not in caplog.text and not any(e == "corrupt" for _, e in cache.events)
    with pytest.raises(StoreUnavailable):  # taken as down from then on, without waiting again
        cache.fetch(ArtifactKey("toy", "toy", {"lr": 0.3}, "code"), build(built))
    assert len(built) == 1


def test_what_a_host_builds_during_an_outage_is_spilled_served_and_published_by_the_next_run(s3, impatient,
                                                                                              tmp_path):
    built, other = [], ArtifactKey("toy", "toy", {"lr": 0.4}, "code")
    cache = s3(tmp_path)
    real_pipe = cache.shared.fs.pipe_file

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")
    cache.shared.fs.pipe_file = refused  # reads answer (nothing there yet), writes do not
    result = cache.fetch(other, build(built, 4.0))
    assert result.status == "built" and torch.equal(result.payload["weights"], torch.full((2, 3), 4.0))
    spilled = list((tmp_path / "files" / "spill").rglob("*.pt"))
    assert [p.stem for p in spilled] == [other.entry]
    cache.shared.fs.pipe_file = real_pipe
    assert cache.fetch(other, build(built)).status == "loaded" and len(built) == 1  # served from the spill
    assert not s3(tmp_path).shared.published(other.entry) or not spilled[0].exists()
    nxt = s3(tmp_path)  # the next run on this host publishes it
    assert nxt.shared.published(other.entry) and not spilled[0].exists()
    elsewhere = s3(tmp_path / "another-host")
    assert elsewhere.fetch(other, build(built)).status == "loaded" and len(built) == 1
