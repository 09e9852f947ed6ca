"""An ONNX classifier file as the grid takes it (``source = "onnx"``): one float image batch
``[N, 3, H, W]`` in, logits ``[N, classes]`` out, a dynamic batch axis. Here the untrained
network of ``examples/net.py`` stands in for your trained model. Then deploy it with
``pytest benchmarks -n 2 --model mine=onnx:PATH``.

Usage: python examples/export_onnx.py PATH [--classes 10] [--size 32]"""
import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from net import Net  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = Net(args.classes).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.rand(1, 3, args.size, args.size),), str(args.path), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
