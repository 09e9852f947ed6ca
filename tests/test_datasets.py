import pickle
import shutil
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from mnv2core.datasets import (
    ImageSet,
    apply_source_override,
    apply_source_overrides,
    load_dataset,
    parse_source_override,
    random_crop_flip,
    sources,
    synthetic,
    train_batches,
)
from mnv2core.errors import ConfigError, DataNotFoundError
from mnv2core.profiles import DatasetConfig, load_profile
from mnv2core.techniques import catalogue


def config(source, **kw):
    return DatasetConfig(name="ds", source=source, native_size=kw.pop("native_size", 32),
                         input_size=kw.pop("input_size", 32), **kw)


# synthetic ----------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 96])
def test_synthetic_is_deterministic_balanced_uint8(size):
    a, b = synthetic.generate(100, size, seed=3), synthetic.generate(100, size, seed=3)
    assert a.images.shape == (100, 3, size, size) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.bincount(a.labels, minlength=10).tolist() == [10] * 10
    assert not torch.equal(a.images, synthetic.generate(100, size, seed=4).images)


def test_synthetic_classes_differ_in_colour():
    """Learnable: the mean colour of each class's object pixels is distinct."""
    data = synthetic.generate(400, 32, seed=0)
    saturation = data.images.float().amax(1) - data.images.float().amin(1)
    object_pixels = saturation > 120
    means = torch.stack([(data.images[data.labels == c].float() * object_pixels[data.labels == c, None]).sum((0, 2, 3))
                         / object_pixels[data.labels == c].sum() for c in range(10)])
    distances = torch.cdist(means, means) + torch.eye(10) * 1e9
    assert distances.min() > 30


def test_load_synthetic_records_stand_in_provenance(tmp_path):
    splits = load_dataset(config("synthetic", train_size=40, test_size=20), data_root=tmp_path,
                          download=False, seed=0)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (40, 20, 10)
    assert splits.provenance["stand_in"] is True and len(splits.provenance["fingerprint"]) == 64


# torchvision sources -----------------------------------------------------------
def test_missing_cifar10_names_files_and_fixes(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_dataset(config("cifar10"), data_root=tmp_path, download=False, seed=0)
    message = str(error.value)
    assert "data_batch_1" in message and "test_batch" in message
    assert "--download" in message and "--data-root" in message and "imagefolder" in message
    assert str(tmp_path) in message


def test_missing_stl10_names_files_and_fixes(tmp_path):
    with pytest.raises(DataNotFoundError, match="train_X.bin.*--download"):
        load_dataset(config("stl10", native_size=96, input_size=96), data_root=tmp_path, download=False, seed=0)


def test_failed_download_says_so(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataNotFoundError, match="downloading it failed"):
        load_dataset(config("cifar10"), data_root=tmp_path, download=True, seed=0)


def write_fake_cifar10(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(x) for x in rng.integers(0, 10, per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


def test_cifar10_reader_converts_to_nchw(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    # fake files (their md5 cannot match), torchvision's real reader
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    folder = write_fake_cifar10(tmp_path)
    splits = load_dataset(config("cifar10"), data_root=tmp_path, download=False, seed=0)
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert splits.train.images.shape == (20, 3, 32, 32) and len(splits.test) == 4
    assert torch.equal(splits.train.images[0].flatten(), torch.from_numpy(first["data"][0]))
    assert splits.train.labels[:4].tolist() == first["labels"]
    assert splits.classes == tuple(f"c{i}" for i in range(10))


# image folders --------------------------------------------------------------
def write_image_folder(root, sizes=(32,), per_class=3, classes=("cat", "dog")):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                size = sizes[i % len(sizes)]
                pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=g)
                Image.fromarray(pixels.numpy()).save(root / split / name / f"{i}.png")


def test_image_folder_loads_and_resizes(tmp_path):
    write_image_folder(tmp_path, sizes=(32, 48))
    splits = load_dataset(config("imagefolder", path=str(tmp_path)), data_root=tmp_path, download=False, seed=0)
    assert splits.classes == ("cat", "dog")
    assert splits.train.images.shape == (6, 3, 32, 32)
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_is_decoded_once_through_the_cache(tmp_path, monkeypatch):
    from mnv2core.cache import ArtifactCache

    write_image_folder(tmp_path / "data")
    cache = ArtifactCache(tmp_path / "cache")
    cfg = config("imagefolder", path=str(tmp_path / "data"))
    first = load_dataset(cfg, data_root=tmp_path, download=False, seed=0, cache=cache)
    monkeypatch.setattr(sources, "read_image_folder", lambda *a: pytest.fail("decoded twice"))
    second = load_dataset(cfg, data_root=tmp_path, download=False, seed=0, cache=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert first.provenance["fingerprint"] == second.provenance["fingerprint"]
    # records name the folder and its files' sha256, never the machine's absolute path
    assert first.provenance["location"] == "data" and str(tmp_path) not in str(first.provenance)
    assert first.provenance["files_sha256"] == sources.image_folder_fingerprint(tmp_path / "data")


def test_missing_image_folder_explains_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"train/<class>/<image>"):
        load_dataset(config("imagefolder", path=str(tmp_path / "nowhere")), data_root=tmp_path,
                     download=False, seed=0)


def test_undecodable_image_is_named(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataNotFoundError, match="0.png"):
        load_dataset(config("imagefolder", path=str(tmp_path)), data_root=tmp_path, download=False, seed=0)


@pytest.mark.parametrize("damage, message", [
    (lambda root: shutil.rmtree(root / "test" / "dog"), r"test lacks the classes \['dog'\] that the train split has"),
    (lambda root: (root / "test" / "bird").mkdir(), r"test has classes \['bird'\] that the train split lacks"),
    (lambda root: [f.unlink() for f in (root / "train" / "dog").iterdir()], r"class folder .*train/dog holds no images"),
])
def test_class_folders_must_match_and_hold_images(tmp_path, damage, message):
    write_image_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataNotFoundError, match=message):
        load_dataset(config("imagefolder", path=str(tmp_path)), data_root=tmp_path, download=False, seed=0)


# overrides, tensors and augmentation ---------------------------------------
def test_source_override_parsing():
    assert parse_source_override("stl10=imagefolder:/d/x") == ("stl10", "imagefolder", "/d/x")
    assert parse_source_override("cifar10=synthetic") == ("cifar10", "synthetic", None)
    for bad in ["stl10", "stl10=nope", "stl10=imagefolder", "=cifar10"]:
        with pytest.raises(ConfigError):
            parse_source_override(bad)


def test_resize_keeps_uint8_and_labels():
    data = synthetic.generate(8, 32, seed=0)
    big = data.resized(96)
    assert big.images.shape == (8, 3, 96, 96) and big.images.dtype == torch.uint8
    assert torch.equal(big.labels, data.labels)
    assert abs(big.images.float().mean() - data.images.float().mean()) < 2


def test_random_crop_flip_is_a_shifted_or_mirrored_copy():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, padding=0, generator=g)
    for original, augmented in zip(images, out, strict=True):
        assert torch.equal(augmented, original) or torch.equal(augmented, original.flip(-1))
    padded = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(1))
    assert padded.shape == images.shape and padded.dtype == torch.uint8


def test_train_batches_cover_each_image_once_per_epoch():
    data = ImageSet(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10))
    labels = torch.cat([y for _, y in train_batches(data, 5, False, torch.Generator().manual_seed(0))])
    assert sorted(labels.tolist()) == list(range(10))
    batches = list(train_batches(data, 4, True, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [4, 4]  # partial last batch dropped
    assert batches[0][0].dtype == torch.float32 and batches[0][0].max() <= 1.0


def test_spread_takes_every_class_in_turn_from_a_class_sorted_set():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    images = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 3, 2, 2).contiguous()
    sample = ImageSet(images, labels).spread(5)
    assert sample.labels.tolist() == [0, 1, 2, 0, 1]
    assert sample.images[:, 0, 0, 0].tolist() == [0, 3, 5, 1, 4]  # each class's own order kept
    assert len(ImageSet(images, labels).spread(100)) == 9


def test_a_folder_given_as_a_known_dataset_must_have_its_class_count(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog", "frog"))
    cifar = apply_source_override(config("cifar10"), "imagefolder", str(tmp_path))
    with pytest.raises(ConfigError, match=r"has 3 classes \(cat, dog, frog\); dataset 'ds' expects 10.*--dataset NAME=imagefolder:"):
        load_dataset(cifar, data_root=tmp_path, download=False, seed=0)
    own = load_dataset(config("imagefolder", path=str(tmp_path)), data_root=tmp_path, download=False, seed=0)
    assert own.num_classes == 3  # as a dataset of its own, any count


def test_source_overrides_are_checked_against_the_profile_once():
    profile = load_profile("smoke", catalogue())
    with pytest.raises(ConfigError, match=r"--data-source names 'cifar100'.*synthetic32"):
        apply_source_overrides(profile, ["cifar100=cifar10"])
    with pytest.raises(ConfigError, match="bad --data-source 'synthetic32'"):
        apply_source_overrides(profile, ["synthetic32"])
    replaced = apply_source_overrides(profile, ["synthetic32=cifar10"])
    assert replaced["synthetic32"].source == "cifar10" and replaced["synthetic32"].classes is None  # synthetic: any


def test_an_image_folder_of_one_class_is_refused(tmp_path):
    from PIL import Image

    from mnv2core.datasets.sources import read_image_folder
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "0.png")
    with pytest.raises(DataNotFoundError, match=r"holds 1 class folder\(s\) \['cat'\]: a classifier needs two"):
        read_image_folder(tmp_path, 8)


@pytest.mark.parametrize("name", ["../../escape/zz", "a/b", "my data"])
def test_a_dataset_name_that_is_not_a_plain_identifier_is_refused(name):
    from mnv2core.datasets import parse_source_override
    with pytest.raises(ConfigError, match="must be a plain identifier"):
        parse_source_override(f"{name}=imagefolder:/tmp/x")


def folder_of_sizes(root, sizes):
    """A two-class image folder whose training images have the given sides, in file order."""
    from PIL import Image
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
    for index, side in enumerate(sizes):
        Image.new("RGB", (side, side)).save(root / "train" / ("a" if index % 2 else "b") / f"{index:03d}.png")
    for label in ("a", "b"):
        Image.new("RGB", (8, 8)).save(root / "test" / label / "0.png")
    return root


@pytest.mark.parametrize("sizes, size, note", [
    ([32] * 6, 32, ""),
    ([1] + [32] * 5, 32, "5 of 6 images sampled are 32 px, the size used; the others (1-32 px) are resized to it"),
    ([1500] + [32] * 5, 32, "5 of 6 images sampled are 32 px"),
    ([24, 32, 48, 64, 96, 128], 64, "no size is shared by most images (24-128 px over 6 sampled): all are "
                                    "resized to the median, 64 px"),
])
def test_an_undeclared_folders_size_is_most_images_size_not_the_first_ones(tmp_path, sizes, size, note):
    from mnv2core.datasets.sources import native_size_of
    found, said = native_size_of(folder_of_sizes(tmp_path, sizes))
    assert found == size and said.startswith(note) and (said == "") == (note == "")
