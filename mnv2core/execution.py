"""How models run on the device: memory format (channels_last for conv nets) and bf16
autocast (CUDA, or a CPU with native bf16: AVX512-BF16 or AMX). A leaf module: training,
evaluation, feature extraction and the speed benchmark all take an ``Execution``."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from dataclasses import dataclass

import torch
from torch import nn

# glibc mallopt parameters, and the size below which freed memory stays in the heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
GLIBC_SETTLED_MMAP = 32 << 20  # glibc's dynamic mmap threshold stops rising here (64-bit)
# Input pixels per CPU inference batch: above it activations leave the caches (MobileNetV2 at
# 96 px: 64 images ran 2x faster than 256; at 32 px 256 stays fastest)
CPU_BATCH_PIXELS = 64 * 96 * 96
# the x86 flags of an int8 dot product (py-cpuinfo's names): with one, int8 runtimes run their
# fast kernels (ORT: u8 activations x s8 weights); without, other ones
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FALLBACK_NOTE = "bf16 autocast asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): ran fp32"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's flags, by py-cpuinfo's names (pytest-benchmark's machine_info records them)."""
    import cpuinfo

    return frozenset(cpuinfo.get_cpu_info().get("flags", []))


def int8_dot_product(flags: frozenset[str] | None = None) -> list[str]:
    """The int8 dot-product flags of a CPU with ``flags`` (default: this one)."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bf16 autocast can pay off."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL("libc.so.6")


def _set_thresholds(libc, mmap_bytes: int, trim_bytes: int) -> bool:
    return libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1


@functools.cache
def keep_freed_memory() -> str:
    """Have glibc keep freed blocks of up to 1 GiB for reuse. By default it maps each large
    block (a batch's activations: 56 MB for MobileNetV2 at 96 px, batch 64) fresh and unmaps
    it on free, so every batch page-faults its memory in again: on the 2-core machine that
    was half the time of CPU inference (256 -> 530 images/s with this). The heap then keeps
    its peak size. Process-wide, once; returns what was done (for the records)."""
    libc = _glibc()
    if libc is None:
        return "default allocator (not glibc)"
    done = _set_thresholds(libc, KEEP_FREED_BYTES, KEEP_FREED_BYTES)
    return "glibc keeps freed blocks up to 1 GiB (mallopt)" if done else "glibc defaults (mallopt refused)"


@contextlib.contextmanager
def default_allocator():
    """glibc's own behaviour for the block (its dynamic thresholds where they settle: mmap
    above 32 MiB, trim above 64 MiB), as a plain PyTorch process has it; then the harness's
    again if it had set its own. For timing a plain loop inside the harness's process."""
    libc = _glibc()
    tuned = libc is not None and keep_freed_memory.cache_info().currsize > 0
    if tuned:
        _set_thresholds(libc, GLIBC_SETTLED_MMAP, 2 * GLIBC_SETTLED_MMAP)
    try:
        yield
    finally:
        if tuned:
            _set_thresholds(libc, KEEP_FREED_BYTES, KEEP_FREED_BYTES)


@dataclass(frozen=True)
class Execution:
    """``channels_last``: 4-D weights and activations in NHWC (oneDNN's and cuDNN's fast
    layout); ``amp``: bf16 autocast in effect; ``note``: why an asked-for setting is off;
    ``kernels``: the CPU math kernels (``mnv2core.kernels``: native or portable)."""

    device: torch.device = torch.device("cpu")
    channels_last: bool = False
    amp: bool = False
    note: str = ""
    kernels: str = "native"

    @classmethod
    def resolve(cls, device: torch.device, channels_last: bool, amp: bool, kernels: str = "native") -> Execution:
        """The settings a profile asks for, as far as ``device`` supports them."""
        supported = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        note = BF16_FALLBACK_NOTE if amp and not supported else ""
        return cls(device, channels_last, amp and supported, note, kernels)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` on the device in this memory format (in place; returned for chaining)."""
        return model.to(self.device, memory_format=self.memory_format)

    def inference_batch(self, batch_size: int, size: int | None) -> int:
        """``batch_size``, capped on a CPU to ``CPU_BATCH_PIXELS`` of ``size`` px inputs."""
        if self.device.type != "cpu" or not size:
            return batch_size
        return max(1, min(batch_size, CPU_BATCH_PIXELS // (size * size)))

    def autocast(self):
        return autocast(self.device, self.amp)

    def spec(self) -> dict:
        """What changes results (part of every cache key)."""
        pinned = {"kernels": self.kernels} if self.kernels != "native" else {}
        return {"channels_last": self.channels_last, "amp": self.amp, **pinned}

    def record(self) -> dict:
        return {"device": str(self.device), "channels_last": self.channels_last, "amp": self.amp,
                "amp_dtype": "bfloat16" if self.amp else None, "note": self.note}


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when enabled; a no-op otherwise."""
    if enabled and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_contiguous(model: nn.Module) -> nn.Module:
    """``model`` with NCHW-contiguous weights (in place), for APIs that want them (FX
    tracing and quantization, ONNX export)."""
    return model.to(memory_format=torch.contiguous_format)
