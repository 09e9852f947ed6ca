"""Where ONNX Runtime spends a batch-1, one-thread inference, fp32 against int8: its own
profiler's kernel times per run, convolutions split into dense and depthwise.

    python docs/measurements/ort_profile.py .mnv2cache/onnx/synthetic96-mobilenet_v2-full_ft-*.onnx
"""
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from mnv2core.deploy.onnx_runtime import int8_kernels


def profile(path: Path, config: dict[str, str], runs: int = 300) -> dict[str, float]:
    scratch = Path(tempfile.mkdtemp())
    optimized = scratch / "optimized.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(scratch / "ort_profile")  # not the working folder
    options.optimized_model_filepath = str(optimized)
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kinds = {node.name: "depthwise conv" if any(a.name == "group" and a.i > 1 for a in node.attribute) else "dense conv"
             for node in onnx.load(optimized).graph.node if node.op_type in ("Conv", "QLinearConv")}
    feed = {"images": np.random.rand(1, 3, 96, 96).astype(np.float32)}
    for _ in range(runs):
        session.run(None, feed)
    totals = collections.Counter()
    for event in json.load(open(session.end_profiling())):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            totals[kinds.get(node, event["args"]["op_name"])] += event["dur"]
    return {name: micros / runs / 1000 for name, micros in totals.most_common(6)}


if __name__ == "__main__":
    fp32 = Path(next(a for a in sys.argv[1:] if not a.endswith(".int8.onnx")))  # the glob names both
    for label, path, config in (("fp32", fp32, {}),
                                ("int8", fp32.with_suffix(".int8.onnx"), int8_kernels().session_options)):
        print(label, ", ".join(f"{name} {ms:.3f} ms" for name, ms in profile(path, config).items()))
