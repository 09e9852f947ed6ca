"""A user's ONNX classifier file as a network (``source = "onnx"``): deployed as it is, never
trained. Its forward runs the file in ONNX Runtime, so the harness's evaluation, robustness
and int8 calibration treat it like any other model; what needs the PyTorch graph (training,
compression, gradients) does not apply to it. The file must take one float image batch
``[N, 3, H, W]`` (normalised as the profile's ``mean`` and ``std`` say) and return logits
``[N, classes]``; a fixed batch axis is run in chunks of that size."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

IMAGE_INPUT = "images"  # the input name of every ONNX file the harness writes


@dataclass(frozen=True)
class OnnxSignature:
    """What the harness reads of an ONNX classifier: its input's name, batch (None: dynamic),
    height and width (None: dynamic), class count (None: dynamic) and weight count."""

    input_name: str
    batch: int | None
    height: int | None
    width: int | None
    classes: int | None
    weights: int


def _dim(dim) -> int | None:
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _inputs(graph) -> list:
    """The graph's inputs that are fed, not initializers listed as inputs (older exports)."""
    constants = {init.name for init in graph.initializer}
    return [i for i in graph.input if i.name not in constants]


def read_signature(path: Path, model: str) -> OnnxSignature:
    """The file's signature; ConfigError naming the fix when it is not an image classifier."""
    import onnx
    if not path.is_file():
        raise ConfigError(f"model {model}: ONNX file {path} does not exist (a path in a profile is relative to the "
                          f"profile's folder, one given with --model to the current folder)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others: the file is not a model
        raise ConfigError(f"model {model}: {path} is not an ONNX model ({type(exc).__name__}): export it with "
                          f"torch.onnx.export") from None
    graph = proto.graph
    inputs = _inputs(graph)
    expected = "one float32 image batch [N, 3, H, W]"
    if len(inputs) != 1:
        raise ConfigError(f"model {model}: {path} has {len(inputs)} inputs ({[i.name for i in inputs]}); an image "
                          f"classifier takes {expected}")
    tensor = inputs[0].type.tensor_type
    dims = list(tensor.shape.dim)
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or _dim(dims[1]) != 3:
        shape = [_dim(d) or (d.dim_param or "?") for d in dims]
        raise ConfigError(f"model {model}: {path}'s input {inputs[0].name!r} is "
                          f"{onnx.TensorProto.DataType.Name(tensor.elem_type).lower()} {shape}; the harness feeds "
                          f"{expected}: export the model with that input")
    outputs = list(graph.output)
    out_dims = list(outputs[0].type.tensor_type.shape.dim) if outputs else []
    if len(out_dims) != 2:
        raise ConfigError(f"model {model}: {path}'s first output is not logits [N, classes] "
                          f"(rank {len(out_dims)}): export the classifier's logits as its first output")
    weights = sum(int(np.prod(init.dims)) for init in graph.initializer)
    return OnnxSignature(inputs[0].name, _dim(dims[0]), _dim(dims[2]), _dim(dims[3]), _dim(out_dims[1]), weights)


def file_digest(path: Path) -> str:
    """sha256 (16 hex digits) of the file: part of every key built from it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class OnnxNetwork(nn.Module):
    """The file run by ONNX Runtime on the CPU (as many threads as torch uses): tensors in,
    logits out, no parameters and no gradients."""

    def __init__(self, path: str | Path, model: str, num_classes: int):
        super().__init__()
        self.path, self.model = Path(path), model
        self.signature = read_signature(self.path, model)
        if self.signature.classes is not None and self.signature.classes != num_classes:
            raise ConfigError(f"model {model}: {self.path} outputs {self.signature.classes} classes, the dataset has "
                              f"{num_classes}: export it with a {num_classes}-class head")
        self.num_classes = num_classes
        self._session = None

    def check_input_size(self, size: int) -> None:
        """ConfigError when the file's fixed height or width is not the dataset's input size."""
        fixed = {self.signature.height, self.signature.width} - {None}
        if fixed and fixed != {size}:
            raise ConfigError(f"model {self.model}: {self.path} takes {self.signature.height}x{self.signature.width} "
                              f"images, the dataset's input_size is {size}: set input_size = "
                              f"{self.signature.height} in the dataset's table")

    @property
    def weight_count(self) -> int:
        return self.signature.weights

    def session(self):
        if self._session is None:
            self._session = ort_session(self.path, torch.get_num_threads())
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().float().cpu().numpy())
        logits = run_in_batches(lambda chunk: self.session().run(None, {self.signature.input_name: chunk})[0],
                                images, self.signature.batch)
        return torch.from_numpy(logits).to(x.device)

    def __getstate__(self):  # deepcopy and pickling: the session is reopened where it is used
        return {**self.__dict__, "_session": None}

    def extra_repr(self) -> str:
        return f"{self.path.name}, batch {self.signature.batch or 'dynamic'}"


def run_in_batches(run, images: np.ndarray, batch: int | None) -> np.ndarray:
    """``run`` over ``images`` in chunks of a fixed ``batch`` (the last one padded with copies
    of its first image, whose outputs are dropped); all at once when ``batch`` is None."""
    if batch is None or len(images) == batch:
        return run(images)
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)]) if len(chunk) < batch \
            else chunk
        outputs.append(run(np.ascontiguousarray(padded))[:len(chunk)])
    return np.concatenate(outputs)


def ort_session(path: Path, threads: int = 1, config: dict[str, str] | None = None):
    """An ONNX Runtime CPU session of ``path`` on ``threads`` threads; ``config``: session
    config entries (an int8 model's: ``deploy.onnx_runtime.int8_kernels().session_options``)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fixed_batch(path: Path) -> int | None:
    """The batch size an ONNX file's input fixes (None: dynamic)."""
    import onnx
    first = _inputs(onnx.load(str(path), load_external_data=False).graph)[0]
    return _dim(first.type.tensor_type.shape.dim[0])


def rebatched(batches: list[torch.Tensor], batch: int | None) -> list[torch.Tensor]:
    """``batches`` regrouped into batches of a fixed ``batch`` size (a remainder dropped);
    unchanged when ``batch`` is None."""
    if batch is None:
        return batches
    images = torch.cat(batches)
    return [images[start:start + batch] for start in range(0, len(images) - batch + 1, batch)]


def with_normalization(source: Path, target: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """``source`` with ``(images - mean) / std`` before its graph, so the written file takes raw
    [0, 1] pixels named ``images`` as every ONNX file the harness exports does; its first
    output only, as the logits."""
    import onnx
    from onnx import helper, numpy_helper
    proto = onnx.load(str(source))
    graph = proto.graph
    original = _inputs(graph)[0]
    normalized = original.name if original.name != IMAGE_INPUT else f"{IMAGE_INPUT}_normalized"
    if normalized != original.name:
        for node in graph.node:
            node.input[:] = [normalized if name == original.name else name for name in node.input]
    pixels = onnx.ValueInfoProto()
    pixels.CopyFrom(original)
    pixels.name = IMAGE_INPUT
    graph.input.remove(original)
    graph.input.insert(0, pixels)
    shape = (1, len(mean), 1, 1)
    graph.initializer.extend([numpy_helper.from_array(np.array(mean, np.float32).reshape(shape), "pixel_mean"),
                              numpy_helper.from_array(np.array(std, np.float32).reshape(shape), "pixel_std")])
    prefix = [helper.make_node("Sub", [IMAGE_INPUT, "pixel_mean"], ["pixels_centered"], name="normalize_sub"),
              helper.make_node("Div", ["pixels_centered", "pixel_std"], [normalized], name="normalize_div")]
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[1:]
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(target))
    onnx.checker.check_model(str(target))
    return target
