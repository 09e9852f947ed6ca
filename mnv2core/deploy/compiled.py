"""PyTorch's compiled runtimes on the CPU: ``torch.compile`` (Inductor) of the fp32 model, its
bf16 variants (eager and compiled, where the CPU computes bf16 natively), and PT2E static int8 (torchao's X86InductorQuantizer: per-channel weights, activations calibrated
on the same images as the other runtimes) compiled by Inductor. Both are compiled with
Inductor's freezing on, as PyTorch benchmarks them for inference: without it the int8 graph
stays dequantize-then-fp32 and the weights are not prepacked. Compiling happens at the first
call, which ``compile_*`` make (timed apart from latency)."""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import Mnv2BenchError


class CompileError(Mnv2BenchError):
    """A model that torch.export, PT2E or Inductor could not handle (said in one line)."""


Compiled = Callable[[torch.Tensor], torch.Tensor]


def compile_fp32(model: nn.Module, example: torch.Tensor) -> tuple[Compiled, float]:
    """(the compiled fp32 model, seconds compiling took) of ``model`` on the CPU."""
    model = copy.deepcopy(model).cpu().eval()
    return _compiled(lambda: torch.compile(model), example, "torch.compile")


def eager_bf16(model: nn.Module, example: torch.Tensor) -> tuple[Compiled, float]:
    """(eager PyTorch with bf16 weights and activations, seconds converting took): images in
    and logits out stay float32."""
    started = time.perf_counter()
    model = copy.deepcopy(model).cpu().eval().to(torch.bfloat16)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images.to(torch.bfloat16)).float()

    run(example)
    return run, time.perf_counter() - started


def compile_bf16(model: nn.Module, example: torch.Tensor) -> tuple[Compiled, float]:
    """(the bf16 model compiled by Inductor, seconds compiling took); float32 in and out."""
    model = copy.deepcopy(model).cpu().eval().to(torch.bfloat16)

    def make() -> Compiled:
        compiled = torch.compile(model)
        return lambda images: compiled(images.to(torch.bfloat16)).float()

    return _compiled(make, example, "torch.compile bf16")


def compile_pt2e_int8(model: nn.Module, example: torch.Tensor,
                      calibration: list[torch.Tensor]) -> tuple[Compiled, float]:
    """(PT2E int8 of ``model`` compiled by Inductor, seconds quantizing and compiling took)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    model = copy.deepcopy(model).cpu().eval()

    def quantized() -> Compiled:
        batch = torch.export.Dim("batch", min=1, max=4096)  # exported at 2 images: 1 would be specialised
        exported = torch.export.export(model, (example.expand(2, -1, -1, -1).clone(),),
                                       dynamic_shapes=({0: batch},)).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for batch in calibration:
            prepared(batch.cpu())
        return torch.compile(convert_pt2e(prepared))

    return _compiled(quantized, example, "PT2E int8")


# Dynamo keeps one cache per function, shared by every instance of a model class: by default it
# stops compiling one after 8 (re)compilations and silently runs it eager from then on. A
# process here compiles a dozen MobileNetV2s (every base, batch 1 then batch 32), so the
# limits are raised, and reaching them fails loudly rather than timing eager under a compiled label.
RECOMPILE_LIMITS = {"recompile_limit": 1024, "accumulated_recompile_limit": 8192, "fail_on_recompile_limit_hit": True}


@contextlib.contextmanager
def _inference():
    """No autograd, Inductor's freezing, Dynamo's raised limits: when compiling and running alike."""
    with torch.no_grad(), torch._inductor.config.patch(freezing=True), torch._dynamo.config.patch(RECOMPILE_LIMITS):
        yield


def _compiled(make: Callable[[], Compiled], example: torch.Tensor, what: str) -> tuple[Compiled, float]:
    started = time.perf_counter()
    try:
        with _inference():
            compiled = make()
            compiled(example)  # Inductor compiles at the first call
    except Exception as exc:  # export, quantization and Inductor raise many kinds; each is one line here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CompileError(f"{what} failed: {type(exc).__name__}: {first[:300]}") from exc
    seconds = time.perf_counter() - started

    def run(images: torch.Tensor) -> torch.Tensor:
        with _inference():
            return compiled(images)

    return run, seconds


def versions() -> dict[str, Any]:
    """The versions the compiled runtimes' results depend on."""
    import torchao

    return {"torch": str(torch.__version__), "torchao": str(torchao.__version__),  # plain str: a cache
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}  # entry loads weights-only
