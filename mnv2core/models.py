"""Model construction: any torchvision or timm classifier, one of the harness's builtin
networks, a user's own (``python``: a callable in a module or a file that returns an
``nn.Module``), or a user's ONNX classifier file (``onnx``: deployed as it is, never trained;
``onnx_model``), described by a ``ModelSpec`` (profile data, not code). Every model takes raw
[0, 1] RGB pixels: normalisation is its first layer, with the mean and std its library
declares (timm's ``pretrained_cfg``, torchvision's weights transforms; builtin networks
declare their own), so attacks, ONNX export and int8 all see the same input.

What a library knows about a network's parts comes from the library: timm's
``get_classifier`` / ``forward_features`` / ``forward_head``; for torchvision and builtin
networks (no common API) the classifier is the last ``nn.Linear`` and the network's
top-level child that holds it, and the pooled features are that child's input."""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, NotApplicable
from .folders import write_json_atomic
from .networks import BUILTIN_NETWORKS
from .onnx_model import OnnxNetwork, read_signature

SOURCES = ("torchvision", "timm", "builtin", "python", "onnx")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ModelSpec:
    """One model of a profile (``[models.NAME]``): the library it comes from, the
    architecture's name there, its starting weights (``imagenet``, ``none``, ``pretext`` or a
    state-dict path) and whether those weights are already trained for the dataset
    (``trained``: scored as they are and compressed and deployed without training).
    ``pretrained_cfg`` (timm): the architecture whose pretrained weights (``imagenet``) and
    config (mean, std, input size) the model takes, when they are not ``arch``'s own
    (TensorFlow's EfficientNet-Lite weights in timm's FX-traceable ``efficientnet_lite0``:
    ``tf_efficientnet_lite0``'s). ``onnx``: ``arch`` is the file, its weights are in it and
    trained for the dataset."""

    name: str
    source: str = "torchvision"
    arch: str = ""
    weights: str = "none"
    trained: bool = False
    pretrained_cfg: str = ""
    # python: the callable's keyword arguments, the inputs' mean and std (ImageNet's when not
    # declared; onnx too), the classifier's module path (default: the last nn.Linear), and the
    # sha256 of the source file the callable lives in, or of the ONNX file (set when the
    # profile loads: editing it rebuilds)
    kwargs: tuple[tuple[str, Any], ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    head: str = ""
    code: str = ""
    # a weights file that wraps its state dict (``{"state_dict": ...}``) or prefixes its keys
    checkpoint_key: str = ""
    strip_prefix: str = ""

    def __post_init__(self):
        if not self.arch:
            object.__setattr__(self, "arch", self.name)
        if isinstance(self.kwargs, dict):  # from a profile table or a payload
            object.__setattr__(self, "kwargs", tuple(sorted(self.kwargs.items())))
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.source == "onnx":
            object.__setattr__(self, "trained", True)

    @property
    def pretrained(self) -> bool:
        """Whether it starts from weights trained elsewhere (for another task or this one)."""
        return self.weights != "none" or self.deploy_only

    @property
    def deploy_only(self) -> bool:
        """A file deployed as it is (ONNX): never trained, compressed or differentiated."""
        return self.source == "onnx"

    def identity(self) -> dict[str, str]:
        """What rebuilds the network (source, arch, the config its inputs are normalised by),
        for payloads and cache keys."""
        config = {"pretrained_cfg": self.pretrained_cfg} if self.pretrained_cfg else {}
        if self.source == "python":
            config = {"kwargs": dict(self.kwargs), "mean": list(self.mean), "std": list(self.std), "head": self.head,
                      "code": self.code}
        if self.source == "onnx":
            config = {"mean": list(self.mean), "std": list(self.std), "code": self.code}
        return {"name": self.name, "source": self.source, "arch": self.arch, **config}


def default_spec(name: str) -> ModelSpec:
    """The spec of a model no profile declares: a builtin network of that name, else the
    torchvision classifier of that name."""
    return ModelSpec(name, "builtin" if name in BUILTIN_NETWORKS else "torchvision")


def check_spec(spec: ModelSpec) -> None:
    """ConfigError naming the fix when the library does not know the architecture."""
    if spec.source not in SOURCES:
        raise ConfigError(f"model {spec.name}: source {spec.source!r}; choose one of {list(SOURCES)}")
    if spec.pretrained_cfg and spec.source != "timm":
        raise ConfigError(f"model {spec.name}: pretrained_cfg names a timm architecture's config; "
                          f"its source is {spec.source!r} (drop pretrained_cfg, or use source = \"timm\")")
    if spec.source == "python":
        _check_python(spec)
        return
    if spec.source == "onnx":
        read_signature(Path(spec.arch), spec.name)
        _check_preprocessing(spec)
        return
    known = _known_architectures(spec.source)
    for arch in filter(None, (spec.arch, spec.pretrained_cfg)):
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=6, cutoff=0.6)
            raise ConfigError(f"unknown model {arch!r} in {spec.source}"
                              + (f"; close: {close}" if close else f"; e.g. {sorted(known)[:8]}"))


def _check_python(spec: ModelSpec) -> None:
    """The callable is there, mean and std have a value per channel, a named head is a module."""
    load_callable(spec.arch, spec.name)
    _check_preprocessing(spec)


def _check_preprocessing(spec: ModelSpec) -> None:
    for name in ("mean", "std"):
        if getattr(spec, name) and len(getattr(spec, name)) not in (1, 3):
            raise ConfigError(f"model {spec.name}: {name} has {len(getattr(spec, name))} values; give 3 (RGB) or 1")


def check_network(spec: ModelSpec) -> None:
    """For a user's network (``python``), what only building it shows, once when the profile
    loads: that it builds, and takes the images' channels. Other sources are checked by their
    library and where the classifier is built."""
    if spec.source == "python":
        with torch.random.fork_rng(devices=[]):  # the runs' own random init stays as it was
            check_input_channels(spec.name, build_network(spec, 2), IMAGE_CHANNELS)


def split_callable(arch: str, model: str) -> tuple[str, str]:
    """("path/to/file.py" or "package.module", "callable") of ``arch``."""
    where, _, name = arch.rpartition(":")
    if not where or not name.isidentifier():
        raise ConfigError(f"model {model}: arch {arch!r} must be 'package.module:callable' or "
                          f"'path/to/file.py:callable' for source = \"python\"")
    return where, name


def python_source_file(arch: str, model: str) -> Path:
    """The file the callable of ``arch`` is defined in (its module's, for a dotted name)."""
    where, _ = split_callable(arch, model)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"model {model}: {path} does not exist (a path in a profile is relative to the "
                              f"profile's folder)")
        return path
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError) as exc:
        found, reason = None, f" ({type(exc).__name__}: {exc})"
    else:
        reason = ""
    if found is None or not found.origin:
        raise ConfigError(f"model {model}: module {where!r} cannot be imported{reason}: install it, or name a "
                          f"file, 'path/to/file.py:callable'")
    return Path(found.origin)


def source_digest(arch: str, model: str) -> str:
    """sha256 (16 hex digits) of the callable's source file: part of every key built from it."""
    return hashlib.sha256(python_source_file(arch, model).read_bytes()).hexdigest()[:16]


def load_callable(arch: str, model: str) -> Callable[..., Any]:
    """The callable ``arch`` names (the file or module is imported, which runs its code)."""
    where, name = split_callable(arch, model)
    path = python_source_file(arch, model)
    if where.endswith(".py"):
        module_name = f"mnv2bench_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(f"model {model}: importing {path} failed: {type(exc).__name__}: {exc}") from None
            sys.modules[module_name] = module
    else:
        module = importlib.import_module(where)
    found = getattr(module, name, None)
    if not callable(found):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"model {model}: {path} has no callable {name!r}; it defines {defined}")
    return found


def _known_architectures(source: str) -> list[str]:
    if source == "builtin":
        return list(BUILTIN_NETWORKS)
    return _remembered(source, lambda: _list_architectures(source))


def _list_architectures(source: str) -> list[str]:
    if source == "timm":
        return _timm().list_models()
    from torchvision import models as tv_models
    return tv_models.list_models(module=tv_models)


def architecture_names_file(library: str) -> Path | None:
    """Where the architecture names of the installed ``library`` are kept between processes:
    listing them imports the library (torchvision's models pull in torch._dynamo), 2 s of every
    process that checks a profile, most of which (the pytest controller, --plan) never builds a
    model. Keyed by the installed version; None when it cannot be read without importing it."""
    try:
        version = importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return None
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "mnv2bench" / f"{library}-{version}-architectures.json"


def _remembered(library: str, names: Callable[[], list[str]]) -> list[str]:
    """``names()``, read from ``architecture_names_file`` when a process wrote it before
    (written whole, or not at all: an unreadable or unwritable file only costs the listing)."""
    path = architecture_names_file(library)
    if path is not None:
        try:
            known = json.loads(path.read_text())
            if isinstance(known, list) and known and all(isinstance(name, str) for name in known):
                return known
        except (OSError, ValueError):
            pass
    known = names()
    if path is not None:
        try:
            write_json_atomic(path, sorted(known))
        except OSError:
            pass
    return known


def _timm():
    try:
        import timm
    except ImportError:  # a dependency: only a broken install lacks it
        raise ConfigError("timm models need the timm package: pip install timm") from None
    return timm


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, grey: bool = False):
        super().__init__()
        self.grey = grey  # digit models: the grey level (mean of three identical channels)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            x = x.mean(1, keepdim=True)
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """``normalize`` then a library network ``net``; ``head`` is its last classifier layer,
    ``classifier`` everything after the pooled backbone features."""

    def __init__(self, spec: ModelSpec | str, net: nn.Module):
        super().__init__()
        spec = spec_of(spec)
        self.spec = spec
        self.name = spec.name
        mean, std, grey = preprocessing(spec, net)
        check_input_channels(spec.name, net, 1 if grey else IMAGE_CHANNELS)
        self.normalize = Normalize(mean, std, grey)
        self.net = net
        self.head_path = "" if spec.deploy_only else _head_path(spec, net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def is_timm(self) -> bool:
        return self.spec.source == "timm"

    @property
    def deploy_only(self) -> bool:
        return self.spec.deploy_only

    @property
    def num_classes(self) -> int:
        return self.net.num_classes if self.deploy_only else self.head.out_features

    @property
    def head(self) -> nn.Module:
        """The classifier's last layer (a Linear, or what ``set_head`` put in its place)."""
        if self.deploy_only:
            raise NotApplicable(f"{self.name} is an ONNX file: it has no PyTorch classifier")
        return self.net.get_submodule(self.head_path)

    @property
    def classifier(self) -> nn.Module:
        """Everything after the pooled backbone features: ``forward(x) == classifier(embed(x))``."""
        return self.head if self.is_timm else getattr(self.net, self.head_path.split(".")[0])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled, flattened features of raw pixels (the classifier's input)."""
        if self.is_timm:
            return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)
        captured = {}
        handle = self.classifier.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
        try:
            self.forward(x)
        finally:
            handle.remove()
        return captured["x"]

    def set_head(self, head: nn.Module) -> None:
        self.net.set_submodule(self.head_path, head)

    def feature_parameters(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head_ids]

    def feature_modules(self) -> list[nn.Module]:
        """Modules outside the classifier (put in eval mode when frozen)."""
        classifier = self.classifier
        return [m for m in self.net.children() if m is not classifier and not _contains(m, classifier)]


IMAGE_CHANNELS = 3  # every dataset's images are RGB (grey ones repeat the grey level)


def check_input_channels(model: str, net: nn.Module, channels: int) -> None:
    """ConfigError when the network's first convolution does not take the ``channels`` its
    inputs have (a network without one is not checked)."""
    first = next(((name, m) for name, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first is not None and first[1].in_channels != channels:
        raise ConfigError(f"model {model}: its first convolution ({first[0]}) takes {first[1].in_channels} input "
                          f"channel(s), its images have {channels} (RGB; grey datasets repeat the grey level): "
                          f"build it with {channels} input channels")


def _contains(module: nn.Module, part: nn.Module) -> bool:
    return any(m is part for m in module.modules())


def _head_path(spec: ModelSpec, net: nn.Module) -> str:
    modules = {id(m): name for name, m in net.named_modules()}
    if spec.source == "timm":
        return modules[id(net.get_classifier())]
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if spec.head:
        if spec.head not in linears:
            raise ConfigError(f"model {spec.name}: head = {spec.head!r} is not an nn.Linear of "
                              f"{type(net).__name__}; its nn.Linear modules: {linears}")
        return spec.head
    if not linears:
        raise ConfigError(f"model {spec.name}: no nn.Linear classifier found in {type(net).__name__}")
    return linears[-1]


def preprocessing(spec: ModelSpec, net: nn.Module | None = None) -> tuple[tuple, tuple, bool]:
    """(mean, std, grey) of the model's inputs, as its library declares them."""
    if spec.source == "builtin":
        return BUILTIN_NETWORKS[spec.arch].preprocessing
    if spec.source in ("python", "onnx"):
        return spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD, False
    if spec.source == "timm":
        if spec.pretrained_cfg:
            cfg = _timm().get_pretrained_cfg(spec.pretrained_cfg).to_dict()
        else:
            cfg = getattr(net, "pretrained_cfg", None) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)), False
    weights = _torchvision_weights(spec.arch)
    if weights is None:
        return IMAGENET_MEAN, IMAGENET_STD, False
    transforms = weights.transforms()
    return tuple(transforms.mean), tuple(transforms.std), False


def default_input_size(spec: ModelSpec) -> int | None:
    """The input size the library's weights were made for (reported beside ours)."""
    if spec.source == "timm":
        config = _timm().get_pretrained_cfg(spec.pretrained_cfg or spec.arch).to_dict()
        return config.get("input_size", (3, None, None))[-1]
    if spec.source == "torchvision" and _torchvision_weights(spec.arch) is not None:
        return _torchvision_weights(spec.arch).transforms().crop_size[0]
    return None


def _torchvision_weights(arch: str):
    """torchvision's default weights enum member for ``arch`` (None when it has none)."""
    from torchvision.models import get_model_weights
    try:
        return get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def build_network(spec: ModelSpec | str, num_classes: int) -> nn.Module:
    """A bare network with random init (from the current torch RNG)."""
    spec = spec_of(spec)
    check_spec(spec)
    if spec.source == "builtin":
        return BUILTIN_NETWORKS[spec.arch].make(num_classes)
    if spec.source == "onnx":
        return OnnxNetwork(spec.arch, spec.name, num_classes)
    if spec.source == "python":
        net = load_callable(spec.arch, spec.name)(num_classes, **dict(spec.kwargs))
        if not isinstance(net, nn.Module):
            raise ConfigError(f"model {spec.name}: {spec.arch}(num_classes, **kwargs) returned a "
                              f"{type(net).__name__}, not an nn.Module")
        return net
    if spec.source == "timm":
        return _timm().create_model(spec.arch, pretrained=False, num_classes=num_classes)
    from torchvision.models import get_model
    return get_model(spec.arch, weights=None, num_classes=num_classes)


def spec_of(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else default_spec(model)


def build_model(model: str | ModelSpec, num_classes: int, state_dict: dict | None = None) -> ImageClassifier:
    """A classifier (a name alone means ``default_spec``); ``state_dict`` (of an
    ImageClassifier) restores trained weights."""
    spec = spec_of(model)
    classifier = ImageClassifier(spec, build_network(spec, num_classes))
    if state_dict is not None:
        classifier.load_state_dict(state_dict)
    return classifier


def from_pretrained(model: str | ModelSpec, net_state: dict[str, torch.Tensor], num_classes: int,
                    keep_head: bool = False) -> ImageClassifier:
    """A classifier whose network starts from ``net_state`` (a state dict of the library's
    network, any class count): with a fresh head of ``num_classes`` outputs, or with its own
    head (``keep_head``: weights already trained for these classes, which is checked)."""
    spec = spec_of(model)
    with torch.random.fork_rng():  # finding the head's name draws no random numbers for the run
        probe = ImageClassifier(spec, build_network(spec, num_classes))
    head_key = f"{probe.head_path}.weight"
    if head_key not in net_state:
        raise ConfigError(f"weights for {spec.name} lack {head_key!r}: are they a {spec.source} {spec.arch} "
                          f"state dict? (save model.state_dict())")
    classes = net_state[head_key].shape[0]
    if keep_head and classes != num_classes:
        raise ConfigError(f"{spec.name} is marked trained but its weights have {classes} classes, the dataset "
                          f"{num_classes}; drop 'trained = true' to fine-tune a new head")
    model = ImageClassifier(spec, build_network(spec, classes))
    try:
        model.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in net_state.items()})
    except RuntimeError as exc:  # torch lists every difference over many lines: name the first
        mismatch = state_mismatch(model.net.state_dict(), net_state) or str(exc).strip().splitlines()[0]
        raise ConfigError(f"weights for {spec.name} do not fit {spec.source} {spec.arch}: {mismatch} "
                          f"(are they a state dict of that network?)") from None
    if not keep_head:
        head = model.head
        model.set_head(nn.Linear(head.in_features, num_classes))
    return model


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """The first difference between a network's state dict and ``given``, in words (None: they fit)."""
    missing = [key for key in expected if key not in given and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in given if key not in expected]
    shapes = [key for key in expected if key in given and tuple(expected[key].shape) != tuple(given[key].shape)]
    if shapes:
        key = shapes[0]
        return (f"{key} is {tuple(given[key].shape)} in the file, {tuple(expected[key].shape)} in the network"
                f"{f' ({len(shapes) - 1} more shapes differ)' if len(shapes) > 1 else ''}")
    if missing:
        return f"the file lacks {missing[0]!r}{f' and {len(missing) - 1} more key(s)' if len(missing) > 1 else ''}"
    if unexpected:
        return (f"the file has {unexpected[0]!r}, which the network lacks"
                f"{f', and {len(unexpected) - 1} more' if len(unexpected) > 1 else ''}")
    return None


def count_parameters(model: nn.Module) -> int:
    """Its parameters, an ONNX network's weights included."""
    in_files = sum(m.weight_count for m in model.modules() if isinstance(m, OnnxNetwork))
    return sum(p.numel() for p in model.parameters()) + in_files
