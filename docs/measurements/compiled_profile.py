"""Where compiled PyTorch's batch-1 time goes: a 96 px MobileNetV2 (random weights, 10
classes, channels_last as the harness runs it) compiled by Inductor with freezing (fp32), and
quantized by PT2E (torchao's X86InductorQuantizer) then compiled (int8), on one thread; torch's
profiler over 50 runs, milliseconds per run by kind of work.
    python docs/measurements/compiled_profile.py
"""
import copy

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

RUNS = 50
KINDS = {"convolutions (oneDNN)": ("convolution", "qconv"), "linear": ("linear",),
         "compiled graph's Python call": ("Call CompiledFxGraph",), "Dynamo's guard check": ("Cache Lookup",)}


def pt2e_int8(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(model, (example.expand(2, -1, -1, -1).clone(),), dynamic_shapes=({0: batch},))
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    for _ in range(4):
        prepared(torch.rand(32, 3, 96, 96))
    return convert_pt2e(prepared)


def breakdown(compiled, example: torch.Tensor) -> dict[str, float]:
    for _ in range(10):
        compiled(example)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(RUNS):
            compiled(example)
    events = prof.key_averages()
    per_run = {kind: sum(e.self_cpu_time_total for e in events if any(n in e.key for n in names)) / RUNS / 1000
               for kind, names in KINDS.items()}
    per_run["all"] = sum(e.self_cpu_time_total for e in events) / RUNS / 1000
    return per_run


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval().to(memory_format=torch.channels_last)
    example = torch.rand(1, 3, 96, 96)
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        rows = {"compiled fp32": breakdown(torch.compile(copy.deepcopy(model)), example)}
        torch._dynamo.reset()
        rows["PT2E int8"] = breakdown(torch.compile(pt2e_int8(copy.deepcopy(model), example)), example)
    print("ms per run | " + " | ".join(rows))
    for kind in [*KINDS, "all"]:
        print(f"{kind} | " + " | ".join(f"{row[kind]:.2f}" for row in rows.values()))


if __name__ == "__main__":
    main()
