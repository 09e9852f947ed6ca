"""Readers for each data source: torchvision CIFAR-10 and STL-10, image folders, synthetic.

Every reader returns decoded uint8 tensors; errors for missing data name the files that
are missing and the ways to provide them.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataNotFoundError
from . import digits, synthetic
from .tensors import ImageSet

log = logging.getLogger("mnv2bench.data")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
STL10_FILES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"]
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]


@dataclass(frozen=True)
class RawSplits:
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    location: str  # where it was read (a local path: records keep only its last part)
    content_sha256: str = ""  # of an image folder's files (names and bytes), when known


NATIVE_CLASSES = {"cifar10": 10, "stl10": 10, "mnist": 10}  # a folder standing in for one must have as many


def read_synthetic(native_size: int, train_size: int, test_size: int, seed: int,
                   palette_offset: float = 0.0) -> RawSplits:
    train = synthetic.generate(train_size, native_size, seed=2 * seed, palette_offset=palette_offset)
    test = synthetic.generate(test_size, native_size, seed=2 * seed + 1, palette_offset=palette_offset)
    where = f"generated (synthetic v{synthetic.GENERATOR_VERSION}, seed {seed}, {native_size} px)"
    return RawSplits(train, test, synthetic.CLASS_NAMES, where)


def read_digits(native_size: int, train_size: int, test_size: int, seed: int) -> RawSplits:
    train = digits.generate_digits(train_size, native_size, seed=2 * seed)
    test = digits.generate_digits(test_size, native_size, seed=2 * seed + 1)
    where = f"generated (synthetic digits v{digits.GENERATOR_VERSION}, seed {seed}, {native_size} px)"
    return RawSplits(train, test, digits.CLASS_NAMES, where)


def read_mnist(root: Path, download: bool) -> RawSplits:
    """MNIST through torchvision; the grey digits are stored as three identical channels."""
    from torchvision.datasets import MNIST

    folder = Path(root) / "MNIST" / "raw"
    with _explain_missing("MNIST", "mnist", folder, MNIST_FILES, download):
        train, test = MNIST(str(root), train=True, download=download), MNIST(str(root), train=False)
    def to_set(ds):
        return ImageSet(ds.data[:, None].expand(-1, 3, -1, -1).contiguous(), ds.targets.long())

    return RawSplits(to_set(train), to_set(test), tuple(str(c) for c in range(10)), str(folder))


def read_cifar10(root: Path, download: bool) -> RawSplits:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    with _explain_missing("CIFAR-10", "cifar10", folder, CIFAR10_FILES, download):
        train, test = CIFAR10(str(root), train=True, download=download), CIFAR10(str(root), train=False)
    def to_set(ds):
        return ImageSet(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                        torch.tensor(ds.targets, dtype=torch.int64))

    return RawSplits(to_set(train), to_set(test), tuple(train.classes), str(folder))


def read_stl10(root: Path, download: bool) -> RawSplits:
    from torchvision.datasets import STL10

    folder = root / STL10.base_folder
    with _explain_missing("STL-10", "stl10", folder, STL10_FILES, download):
        train, test = STL10(str(root), split="train", download=download), STL10(str(root), split="test")
    def to_set(ds):
        return ImageSet(torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels.astype("int64")))

    classes = tuple(getattr(train, "classes", [str(c) for c in range(10)]))
    return RawSplits(to_set(train), to_set(test), classes, str(folder))


def read_image_folder(path: Path, native_size: int) -> RawSplits:
    """``path/{train,test}/<class>/<image>``; images of another size are resized."""
    train_files, classes = _list_split(path, "train", None)
    test_files, _ = _list_split(path, "test", classes)
    log.info("decoding %d images from %s", len(train_files) + len(test_files), path)
    images = _decode_all(train_files + test_files, native_size)
    train, test = (ImageSet(images.images[part], images.labels[part])
                   for part in (slice(0, len(train_files)), slice(len(train_files), None)))
    return RawSplits(train, test, classes, str(path))


SIZE_SAMPLE = 1000  # training images whose headers decide an undeclared folder's size


def native_size_of(path: Path) -> tuple[int, str]:
    """(the side every image of the folder is brought to, a note saying how it was decided):
    the size most training images have (of up to SIZE_SAMPLE spread over the folder, read from
    their headers), where more than half have it; else the median size, every image resized.
    Mixed sizes are never refused; the note says what was resized."""
    files, _ = _list_split(path, "train", None)
    step = max(1, len(files) // SIZE_SAMPLE)
    sample = [file for file, _ in files[::step]]
    sizes = []
    for file in sample:
        try:
            with Image.open(file) as handle:  # the header only
                sizes.append(max(handle.size))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataNotFoundError(f"cannot decode image {file}: {exc}") from None
    size, count = collections.Counter(sizes).most_common(1)[0]
    if count == len(sizes):
        return size, ""
    if 2 * count > len(sizes):
        return size, (f"{count} of {len(sizes)} images sampled are {size} px, the size used; "
                      f"the others ({min(sizes)}-{max(sizes)} px) are resized to it")
    median = sorted(sizes)[len(sizes) // 2]
    return median, (f"no size is shared by most images ({min(sizes)}-{max(sizes)} px over {len(sizes)} "
                    f"sampled): all are resized to the median, {median} px")


def image_folder_fingerprint(path: Path) -> str:
    """sha256 over every image's relative path and bytes, so any change is seen."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        files, _ = _list_split(path, split, None)
        for file, _label in files:
            digest.update(str(file.relative_to(path)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _list_split(path: Path, split: str, classes: tuple[str, ...] | None):
    folder = path / split
    if not folder.is_dir():
        raise DataNotFoundError(
            f"image folder {path} has no '{split}' folder. Expected layout: "
            f"{path}/train/<class>/<image> and {path}/test/<class>/<image>. "
            "Unpack or copy the dataset there, or point the data source at the right folder "
            "(--data-source NAME=imagefolder:PATH)."
        )
    found = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    if classes is None and len(found) < 2:
        raise DataNotFoundError(f"{folder} holds {len(found)} class folder(s) {list(found)}: a classifier needs "
                                f"two or more ({folder}/<class>/<image>), or every accuracy would be 1.000")
    classes = classes or found
    unknown, lacking = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
    if unknown:
        raise DataNotFoundError(f"{folder} has classes {unknown} that the train split lacks; "
                                "train/ and test/ must hold the same class folders")
    if lacking:
        raise DataNotFoundError(f"{folder} lacks the classes {lacking} that the train split has; "
                                "train/ and test/ must hold the same class folders")
    files = [(f, label) for label, name in enumerate(classes)
             for f in sorted((folder / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataNotFoundError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    empty = [name for label, name in enumerate(classes) if not any(lab == label for _, lab in files)]
    if empty:
        raise DataNotFoundError(f"class folder {folder / empty[0]} holds no images "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))}); every class needs some")
    return files, classes


UNDECODABLE_LISTED = 5  # undecodable files named in the error; the rest are counted


def _decode_all(files: list[tuple[Path, int]], native_size: int) -> ImageSet:
    """Every image decoded and brought to ``native_size``; the files that cannot be decoded
    are all reported in one error, each once."""
    def decode(item) -> torch.Tensor | str:
        file, _ = item
        try:
            with Image.open(file) as handle:
                pixels = np.asarray(handle.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            return f"{file} ({str(exc).replace(repr(str(file)), '').replace(str(file), '').strip()})"
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        if image.shape[-2:] != (native_size, native_size):
            image = ImageSet(image[None], torch.zeros(1, dtype=torch.int64)).resized(native_size).images[0]
        return image

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(decode, files, chunksize=256))
    failed = [image for image in images if isinstance(image, str)]
    if failed:
        more = f"; and {len(failed) - UNDECODABLE_LISTED} more" if len(failed) > UNDECODABLE_LISTED else ""
        raise DataNotFoundError(f"{len(failed)} image(s) cannot be decoded: {'; '.join(failed[:UNDECODABLE_LISTED])}"
                                f"{more}. Replace or remove them")
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageSet(torch.stack(images), labels)


class _explain_missing:
    """Turns torchvision's 'not found' and download failures into a DataNotFoundError
    that lists the missing files and the three ways to provide the data."""

    def __init__(self, title: str, name: str, folder: Path, files: list[str], download: bool):
        self.title, self.name, self.folder, self.files, self.download = title, name, folder, files, download

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, (RuntimeError, OSError)):
            return False
        missing = [f for f in self.files if not (self.folder / f).is_file()]
        what = (f"missing {', '.join(missing)}" if missing
                else "files present but failed torchvision's checksum (corrupt or partial copy)")
        tried = f"downloading it failed ({exc}); " if self.download else ""
        raise DataNotFoundError(
            f"{self.title} not found in {self.folder}: {what}. {tried}Provide it by one of: "
            f"(1) on a machine with network, allow the download with --download "
            f"(MNV2BENCH_DOWNLOAD=1); (2) point --data-root (MNV2BENCH_DATA_ROOT) at the folder "
            f"that holds {self.folder.name}/; (3) use an image-folder copy with "
            f"--data-source {self.name}=imagefolder:PATH (PATH/{{train,test}}/<class>/<image>)."
        ) from None
