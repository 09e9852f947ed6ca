"""CPU latency of a base model: eager fp32, FX int8, ORT fp32 and ORT int8, and where the
profile deploys them PyTorch's compiled runtimes and OpenVINO's, timed in alternating rounds
in one process. Speed-ups are against the first runtime: eager fp32, or for an ONNX file
(no PyTorch network) ORT fp32; a file with a fixed batch axis is timed at that batch only."""
from __future__ import annotations

from typing import Any

from ..context import Artifact, Case, Context
from ..deploy.latency import cpu_copy, time_runners
from ..deploy.onnx_runtime import int8_kernels, ort_int8_session, ort_session, session_batch
from ..deploy.twins import compiled_twins, int8_model_or_reason, onnx_files, openvino_twins
from ..errors import NotApplicable
from ..metrics import CPU_SHARE, info, ms, speedup
from ..registry import DEPLOYMENT, Technique, present, register, require
from ..schema import NonNegative, Parameters, Positive

METRICS = (
    ms("latency.eager_fp32_b*_ms", "median ms per batch, eager PyTorch fp32", "eager fp32"),
    ms("latency.fx_int8_b*_ms", "median ms per batch, FX int8", "FX int8"),
    ms("latency.ort_fp32_b*_ms", "median ms per batch, ONNX Runtime fp32", "ORT fp32"),
    ms("latency.ort_int8_b*_ms", "median ms per batch, ONNX Runtime static int8", "ORT int8"),
    ms("latency.compiled_fp32_b*_ms", "median ms per batch, Inductor-compiled fp32", "compiled fp32"),
    ms("latency.pt2e_int8_b*_ms", "median ms per batch, PT2E int8 compiled by Inductor", "PT2E int8"),
    ms("latency.eager_bf16_b*_ms", "median ms per batch, eager PyTorch bf16 (CPUs with native bf16)", "eager bf16"),
    ms("latency.compiled_bf16_b*_ms", "median ms per batch, Inductor-compiled bf16 (CPUs with native bf16)",
       "compiled bf16"),
    ms("latency.openvino_fp32_b*_ms", "median ms per batch, OpenVINO at f32", "OpenVINO fp32"),
    ms("latency.openvino_int8_b*_ms", "median ms per batch, OpenVINO, NNCF int8", "OpenVINO int8"),
    info("latency_iqr.*", "ms", "interquartile range of the rounds"),
    speedup("speedup.*", "the reference runtime's time over this one's, same batch, alternating rounds"),
    info("reference", "text", "the runtime speed-ups are against: eager fp32 (an ONNX file's: ORT fp32)"),
    info("batches_skipped", "text", "batch sizes not timed, and why (an ONNX file's fixed batch axis)"),
    info("fastest", "text", "the fastest runtime per batch size"), info("runtimes", "list"),
    info("runtimes_skipped", "text", "runtimes that could not run, and why"),
    info("threads", "count"), info("rounds", "count"),
    info("ort_int8", "config", "ORT int8's quantization and kernels, and the CPU flags that chose them"),
    CPU_SHARE,
    info("under_load", "list", "runs timed while other processes took turns on the cores (CPU share below "
                               "0.9 at one thread): their times are slower than the machine's, their ratios noisier"),
)

LOADED_BELOW = 0.9  # a one-thread run that got less of a core than this shared it with something else


def measure(ctx: Context, case: Case, base: Artifact) -> dict[str, Any]:
    params = ctx.profile.deployments[case.method]
    size = base.meta["input_size"]
    fp32_path, int8_path = onnx_files(ctx, case, base)
    kernels = int8_kernels()
    session = ort_session(fp32_path, params["threads"])
    int8_session = ort_int8_session(int8_path, params["threads"])
    ort = {"ort_fp32": lambda images: session.run(None, {"images": images.numpy()}),
           "ort_int8": lambda images: int8_session.run(None, {"images": images.numpy()})}
    batch_sizes, batches_skipped = timed_batches(params["batch_sizes"], session_batch(session))
    optional = {"openvino": lambda: openvino_twins(ctx, case, base, params["threads"])}
    if base.model.deploy_only:  # an ONNX file: no PyTorch network to run, quantize or compile
        runners, skipped = ort, {"eager_fp32": NO_TORCH, "fx_int8": NO_TORCH}
    else:
        fx_int8, fx_skipped = int8_model_or_reason(ctx, case, base)
        runners = {"eager_fp32": cpu_copy(base.model).eval(), "fx_int8": fx_int8, **ort}
        skipped = {"fx_int8": fx_skipped} if fx_skipped else {}
        optional["compiled"] = lambda: compiled_twins(ctx, case, base)
    for deployment, twins in sorted(optional.items()):
        if ctx.profile.deploys(deployment, case.dataset, case.model, case.base):  # its runtimes run here
            for runtime, twin in twins().items():
                runners[runtime] = None if isinstance(twin, str) else twin[0]
                skipped.update({runtime: twin} if isinstance(twin, str) else {})
    runners = {name: run for name, run in runners.items() if run is not None}
    timed = time_runners(runners, size, batch_sizes, params["warmup"], params["rounds"], params["threads"], ctx.timer)
    latency, spread, share = timed["latency"], timed["latency_iqr"], timed["cpu_share"]
    reference = next(iter(runners))
    speedup = {f"{r}_b{b}_speedup": latency[f"{reference}_b{b}_ms"] / latency[f"{r}_b{b}_ms"]
               for b in batch_sizes for r in list(runners)[1:]}
    fastest = {f"b{b}": min(runners, key=lambda r: latency[f"{r}_b{b}_ms"]) for b in batch_sizes}
    return {"latency": latency, "latency_iqr": spread, "speedup": speedup, "fastest": fastest, "runtimes": list(runners),
            "reference": reference, "runtimes_skipped": skipped, "batches_skipped": batches_skipped,
            "threads": params["threads"], "rounds": params["rounds"], "input_size": size,
            "ort_int8": kernels.record(), "cpu_share": share, "under_load": under_load(share, params["threads"])}


NO_TORCH = "the base is an ONNX file: no PyTorch network"


def timed_batches(wanted: list[int], fixed: int | None) -> tuple[list[int], dict[str, str]]:
    """(the batch sizes timed, those skipped and why): all of ``wanted`` for a dynamic batch
    axis; only the ``fixed`` one otherwise (NotApplicable when it is not among them)."""
    if fixed is None:
        return wanted, {}
    reason = f"the ONNX file's batch axis is fixed at {fixed}"
    if fixed not in wanted:
        raise NotApplicable(f"{reason}; latency's batch_sizes are {wanted}: export it with a dynamic batch axis")
    return [fixed], {f"b{b}": reason for b in wanted if b != fixed}


def under_load(share: dict[str, float], threads: int) -> list[str]:
    """The runs that got less of the CPU than they asked for (judged at one thread, where a
    run's own share is one core)."""
    return sorted(run for run, value in share.items() if threads == 1 and value < LOADED_BELOW)


def check(m: dict, case: Case) -> None:
    reference = [key for key in m["latency"] if key.startswith(f"{m.get('reference', 'eager_fp32')}_")]
    require(bool(reference) and all(value > 0 for value in m["latency"].values()), f"latencies missing: {m['latency']}")
    require(len(m["speedup"]) == (len(m["runtimes"]) - 1) * len(reference)
            and all(v > 0 for v in m["speedup"].values()), f"speed-ups missing: {m['speedup']}")


def rows(found) -> list[dict]:
    rows = []
    for base, m in found:
        for key, value in m.get("latency", {}).items():
            runner, batch, _ = key.rsplit("_", 2)
            speedup = m["speedup"].get(f"{runner}_{batch}_speedup")
            share = m.get("cpu_share", {}).get(f"{runner}_{batch}")
            row = {"model": base, "runtime": runner, "batch": batch.removeprefix("b"),
                   "median ms": f"{value:.2f}", "IQR ms": f"{m['latency_iqr'][f'{runner}_{batch}_iqr']:.2f}",
                   "speed-up": f"{speedup:.2f}x" if speedup else "1.00x",
                   "fastest": "*" if m["fastest"].get(batch) == runner else ""}
            if share is not None:  # records before CPU shares were taken have none
                loaded = " (under load)" if f"{runner}_{batch}" in m.get("under_load", []) else ""
                row["CPU share"] = f"{share:.2f}{loaded}"
            rows.append(row)
    return rows


class LatencyParameters(Parameters):
    batch_sizes: list[Positive] = [1, 32]
    warmup: NonNegative = 3
    rounds: Positive = 20
    threads: Positive = 1


register(Technique("latency", DEPLOYMENT, "CPU latency", measure=measure, check=check,
                   params=LatencyParameters,
                   metrics=METRICS, takes_onnx=True))
present("latency", table=("CPU latency (1 thread; speed-ups against eager fp32, an ONNX file's against ORT fp32, from "
                           "runtimes timed in alternating rounds in one process)", rows))
