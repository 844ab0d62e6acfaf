"""How the local models run on the machine at hand: precision, float32 kernels and threads.

Every choice is made from this machine's capabilities, never from a vendor name, and each can be
overridden by an explicit argument:

* **Precision** (``dtype="auto"``): on a CPU, :func:`cpu_precision` is a fixed rule on the CPU's flags:
  bfloat16 where the CPU has native bfloat16 matrix units (``amx_bf16`` or ``avx512_bf16``), float32
  elsewhere. A rule rather than a measurement, so the default is the same on every run and in every
  server worker of one machine. On CUDA: bfloat16 where supported, else float16.
* **float32 kernels**: torch's float32 matmul goes to MKL on x86 builds, which runs well below peak on
  some CPUs and at full speed on others. :func:`probe_fp32_kernel` times MKL and oneDNN on the model's own
  linear-layer shapes (once per process and shape set) and :func:`choose_fp32_kernel` keeps oneDNN only
  when it is clearly faster (1.2x). ``RAGKIT_KERNELS=mkl`` or ``=onednn`` fixes it process-wide.
* **Threads**: torch's thread count is process-wide (it covers torch, MKL and oneDNN, one OpenMP pool).
  A model load lowers it to :func:`usable_cpus` when it is higher (CPU affinity or a container's CPU
  quota), and otherwise leaves it alone; :func:`set_threads` caps it for people who share a machine.

The choices of one model are its :class:`Runtime` (``emb.runtime``, ``reranker.runtime``), logged at INFO
when the model loads.

Example:
    >>> cpu_precision({"avx2", "amx_bf16", "amx_int8"}), cpu_precision({"avx2", "fma"})
    ('bfloat16', 'float32')
    >>> choose_fp32_kernel(mkl_seconds=1.0, onednn_seconds=0.5)
    'onednn'
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BF16_FLAGS",
    "KERNELS",
    "Runtime",
    "auto_dtype",
    "choose_fp32_kernel",
    "cpu_flags",
    "cpu_precision",
    "probe_fp32_kernel",
    "set_threads",
    "usable_cpus",
]

logger = logging.getLogger("ragkit")

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags of native bfloat16 matrix units (Intel AMX; AVX512-BF16 on Intel and AMD Zen 4 and later)."""

KERNELS = ("auto", "mkl", "onednn")
"""Values of ``kernels=``: measured, torch's default float32 matmul (MKL on x86 builds), or oneDNN."""

MIN_ONEDNN_SPEEDUP = 1.2
"""oneDNN replaces the default float32 kernel only when it measures at least this much faster."""

_PROBE_TOKENS = 128
_PROBE_ROUNDS = 3
_probed: dict[tuple[Any, ...], tuple[str, float, float]] = {}


@functools.lru_cache(maxsize=8)
def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags, lower-case, from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM)
    or from ``cpuinfo``, a text in that format.

    Where there is no such line (macOS, Windows) and torch is already imported, torch's own AMX /
    AVX512-BF16 checks stand in for the two flags that matter; otherwise the set is empty, which means
    float32. Read once per process.

    Example:
        >>> sorted(cpu_flags("processor : 0\\nflags : fpu avx2 AMX_BF16\\n"))
        ['amx_bf16', 'avx2', 'fpu']
        >>> sorted(cpu_flags("Features : fp asimd bf16"))
        ['asimd', 'bf16', 'fp']
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    flags: set[str] = set()
    torch = sys.modules.get("torch")
    cpu = getattr(torch, "cpu", None)
    for flag, check in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        try:
            if cpu is not None and getattr(cpu, check)():
                flags.add(flag)
        except (AttributeError, RuntimeError):
            pass
    return frozenset(flags)


def cpu_precision(flags: Iterable[str] | None = None) -> str:
    """The CPU precision of ``dtype="auto"``: ``"bfloat16"`` when ``flags`` hold a native bfloat16 matrix
    unit (:data:`BF16_FLAGS`), else ``"float32"``. ``None``: this machine's :func:`cpu_flags`.

    Measured: bfloat16 ran 2.8-3x faster than float32 end to end on an Intel Xeon with AMX and on an
    AMD EPYC with AVX512-BF16; on an EPYC without it bfloat16 ran 3.5x slower (emulated).

    Example:
        >>> cpu_precision({"avx512f", "avx512_bf16"}), cpu_precision(set())
        ('bfloat16', 'float32')
    """
    have = set(cpu_flags() if flags is None else flags)
    return "bfloat16" if have.intersection(BF16_FLAGS) else "float32"


def auto_dtype(
    device_type: str,
    *,
    flags: Iterable[str] | None = None,
    cuda_bf16: bool = True,
    onednn: bool = True,
    cpu_bfloat16: bool = True,
) -> tuple[str, str]:
    """What ``dtype="auto"`` means on a device, and why: ``(dtype name, reason)``.

    CUDA: bfloat16 when ``cuda_bf16`` (the GPU supports it), else float16. CPU: :func:`cpu_precision`
    of ``flags`` when torch has oneDNN (``onednn``; its bfloat16 kernels use those units) and the model
    allows it (``cpu_bfloat16``: the reranker keeps float32). Anything else (MPS): float32.

    Example:
        >>> auto_dtype("cpu", flags={"amx_bf16"})
        ('bfloat16', 'auto: the CPU has amx_bf16 (native bfloat16 matrix units)')
        >>> auto_dtype("cpu", flags={"avx2"})[0], auto_dtype("cuda", cuda_bf16=False)[0]
        ('float32', 'float16')
    """
    if device_type == "cuda":
        return (
            ("bfloat16", "auto: CUDA with bfloat16") if cuda_bf16 else ("float16", "auto: CUDA without bf16")
        )
    if device_type != "cpu":
        return "float32", f"auto: float32 on {device_type}"
    have = set(cpu_flags() if flags is None else flags)
    units = sorted(have.intersection(BF16_FLAGS))
    if cpu_precision(have) == "float32":
        return "float32", "auto: the CPU has no native bfloat16 matrix unit (amx_bf16, avx512_bf16)"
    if not onednn:
        return "float32", "auto: this torch build has no oneDNN for bfloat16"
    if not cpu_bfloat16:
        return "float32", f"auto: float32 for this model on CPU (the CPU has {', '.join(units)})"
    return "bfloat16", f"auto: the CPU has {', '.join(units)} (native bfloat16 matrix units)"


def choose_fp32_kernel(
    mkl_seconds: float, onednn_seconds: float, *, min_speedup: float = MIN_ONEDNN_SPEEDUP
) -> str:
    """``"onednn"`` when it took at most ``1 / min_speedup`` of MKL's time, else ``"mkl"``.

    A tie or a small win keeps torch's default kernel: the swap must pay for itself clearly.

    Example:
        >>> choose_fp32_kernel(1.0, 0.9), choose_fp32_kernel(1.0, 0.8), choose_fp32_kernel(1.0, 2.0)
        ('mkl', 'onednn', 'mkl')
    """
    return "onednn" if mkl_seconds >= min_speedup * onednn_seconds else "mkl"


def probe_fp32_kernel(
    shapes: Iterable[tuple[int, int]],
    *,
    tokens: int = _PROBE_TOKENS,
    rounds: int = _PROBE_ROUNDS,
    min_speedup: float = MIN_ONEDNN_SPEEDUP,
    timer: Callable[[], float] = time.perf_counter,
) -> str:
    """Time MKL and oneDNN float32 linear layers of ``shapes`` and return the faster (see
    :func:`choose_fp32_kernel`).

    ``shapes`` are ``(in_features, out_features)`` of the model's float32 linear layers, one entry per
    layer: each distinct shape is timed on ``tokens`` rows, best of ``rounds`` (alternating kernels), and
    weighted by how often it occurs. Random weights, one shape at a time, so memory stays at one layer.
    The result is cached per process for a shape set, token count and thread count (milliseconds for
    small models, 0.15 s at the 0.6B width on two cores, about 1 s for a process's first torch
    matmuls). ``"mkl"`` when torch has no oneDNN.

    Example:
        >>> probe_fp32_kernel([(64, 128), (128, 64)]) in ("mkl", "onednn")
        True
    """
    import torch

    counts = Counter((int(i), int(o)) for i, o in shapes)
    if not counts or not torch.backends.mkldnn.is_available():
        return "mkl"
    key = (tuple(sorted(counts.items())), tokens, torch.get_num_threads(), min_speedup)
    if key in _probed and timer is time.perf_counter:
        return _probed[key][0]
    gen = torch.Generator().manual_seed(0)
    mkl = onednn = 0.0
    with torch.inference_mode():
        for (fan_in, fan_out), count in counts.items():
            x = torch.randn(tokens, fan_in, generator=gen)
            w = torch.randn(fan_out, fan_in, generator=gen) / math.sqrt(fan_in)
            b = torch.zeros(fan_out)
            packed_w, packed_b = w.to_mkldnn(), b.to_mkldnn()

            def run_mkl(x=x, w=w, b=b) -> Any:
                return torch.nn.functional.linear(x, w, b)

            def run_onednn(x=x, w=packed_w, b=packed_b) -> Any:
                return torch._C._nn.mkldnn_linear(x.to_mkldnn(), w, b).to_dense()

            best = {"mkl": math.inf, "onednn": math.inf}
            run_mkl(), run_onednn()  # warm-up: first calls pay for allocation and kernel selection
            for _ in range(rounds):
                for name, run in (("mkl", run_mkl), ("onednn", run_onednn)):
                    start = timer()
                    run()
                    best[name] = min(best[name], timer() - start)
            mkl += count * best["mkl"]
            onednn += count * best["onednn"]
    choice = choose_fp32_kernel(mkl, onednn, min_speedup=min_speedup)
    if timer is time.perf_counter:
        _probed[key] = (choice, mkl, onednn)
    logger.debug("float32 kernel probe: mkl %.4fs, onednn %.4fs -> %s", mkl, onednn, choice)
    return choice


def usable_cpus() -> int:
    """How many CPUs this process may run on: its CPU affinity, lowered by a cgroup CPU quota (containers).

    Example:
        >>> usable_cpus() >= 1
        True
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = None
    try:  # cgroup v2: "max 100000" or "200000 100000"
        value, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if value != "max":
            quota = int(value) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            value = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if value > 0 and period > 0:
                quota = value / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def set_threads(threads: int | None = None) -> int:
    """Cap the threads local models compute with; returns the number set.

    ``threads=None`` means :func:`usable_cpus`. This is torch's ``set_num_threads``, which is
    process-wide: it covers every model of the process, and MKL and oneDNN (they share torch's OpenMP
    pool). It also sets ``TOKENIZERS_PARALLELISM=false`` when unset, so that the fast tokenizers'
    own thread pool (which runs between forward passes, but would otherwise take every core) stays
    out of the way on a shared machine. To cap a whole process from outside, set ``OMP_NUM_THREADS``
    before it starts (``OMP_NUM_THREADS=2 ragkit serve ...``).

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> set_threads(1)
        1
        >>> set_threads(before) == before
        True
    """
    import torch

    if threads is None:
        threads = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from ragkit.errors import ConfigError

        raise ConfigError(f"threads must be a positive int or None, got {threads!r}")
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return threads


@dataclass(frozen=True)
class Runtime:
    """What one local model runs with, and why (``emb.runtime``, ``reranker.runtime``).

    Attributes:
        device: ``"cpu"``, ``"cuda:0"``, ``"mps"``.
        dtype: the weights' dtype name: ``"float32"``, ``"bfloat16"``, ``"float16"`` (``"float32"``
            for int8 quantisation, which starts from float32 weights).
        kernels: the linear layers' kernels: ``"mkl"`` (torch's default float32 matmul), ``"onednn"``
            (float32 through oneDNN), ``"default"`` (torch's own choice: oneDNN for bfloat16 on CPU,
            cuBLAS on CUDA) or ``"int8"`` (torchao's int8 kernels).
        attention: the attention implementation (``"sdpa"``, ``"flash_attention_2"``, ``"eager"``).
        threads: torch's intra-op threads when the model loaded (process-wide).
        reasons: one sentence per choice.

    Example:
        >>> rt = Runtime("cpu", "bfloat16", "default", "sdpa", 2, ("auto: the CPU has amx_bf16",))
        >>> str(rt)
        'cpu, bfloat16, default kernels, sdpa attention, 2 threads'
    """

    device: str
    dtype: str
    kernels: str
    attention: str
    threads: int
    reasons: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return (
            f"{self.device}, {self.dtype}, {self.kernels} kernels, {self.attention} attention, "
            f"{self.threads} threads"
        )
