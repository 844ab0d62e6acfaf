"""Torch helpers shared by the local embedder and reranker: device/dtype choice and token-budget batches.

Imported only by modules that already need torch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ragkit._deps import require
from ragkit.errors import ConfigError

logger = logging.getLogger("ragkit")

T = TypeVar("T")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


@contextlib.contextmanager
def quiet_loading(show_progress: bool | None = None) -> Iterator[None]:
    """While a model loads: no "Loading weights" bar from transformers unless ``show_progress`` is
    True, and no log lines from torchao (GPU-only kernels it cannot load on a CPU machine).

    transformers imports torchao while loading any model when it is installed, so this wraps loading
    too. Both settings are restored afterwards (they are process-wide in those libraries).
    """
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    bars = None
    if show_progress is not True:
        try:
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except ImportError:  # transformers missing: the caller's require() says so
            bars = None
    try:
        yield
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def torch_module(purpose: str):
    """Import torch, or raise an error naming the ``local`` extra."""
    return require("torch", purpose=purpose)


def resolve_device(device: str | Any = "auto") -> Any:
    """``"auto"`` → CUDA, then Apple MPS, then CPU. An explicit device that is not there raises.

    Example:
        >>> resolve_device("cpu").type
        'cpu'
    """
    torch = torch_module("local models")
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} was asked for but CUDA is not available (torch {torch.__version__})"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={device!r} was asked for but Apple MPS is not available")
    return dev


def resolve_dtype(dtype: str | Any, device: Any, *, cpu_bfloat16: bool = False) -> Any:
    """The torch dtype for ``dtype`` on ``device`` (see :func:`dtype_choice`); ``"auto"`` keeps float32 on
    CPU unless ``cpu_bfloat16``.

    Example:
        >>> import torch
        >>> resolve_dtype("auto", torch.device("cpu"))
        torch.float32
    """
    return dtype_choice(dtype, device, cpu_bfloat16=cpu_bfloat16)[0]


def dtype_choice(dtype: str | Any, device: Any, *, cpu_bfloat16: bool = True) -> tuple[Any, str]:
    """The torch dtype for ``dtype`` on ``device``, and why: ``"auto"`` follows
    :func:`ragkit.runtime.auto_dtype` (bfloat16 on CUDA and on CPUs with native bfloat16 matrix units,
    float32 elsewhere; ``cpu_bfloat16=False`` keeps float32 on every CPU). An explicit dtype wins;
    float16 on CPU raises (numerically unsafe there).

    Example:
        >>> import torch
        >>> dtype_choice("float32", torch.device("cpu"))
        (torch.float32, 'explicit dtype')
    """
    from ragkit.runtime import auto_dtype

    torch = torch_module("local models")
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype is None or dtype == "auto":
        name, reason = auto_dtype(
            device.type,
            cuda_bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
            onednn=torch.backends.mkldnn.is_available(),
            cpu_bfloat16=cpu_bfloat16,
        )
        return getattr(torch, name), reason
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        resolved = getattr(torch, _DTYPES[dtype.lower()])
    else:
        raise ConfigError(f"unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'")
    if resolved == torch.float16 and device.type == "cpu":
        raise ConfigError("dtype=float16 is not supported on CPU (unstable); use 'float32' or 'bfloat16'")
    return resolved, "explicit dtype"


def attn_implementation(device: Any) -> str:
    """flash-attention 2 on CUDA when the package is installed, SDPA otherwise."""
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def pack_by_tokens(
    lengths: Sequence[int],
    max_batch_tokens: int,
    max_batch_size: int | None = None,
    *,
    max_padding: float | None = None,
) -> list[list[int]]:
    """Group item indices into batches, longest first, so ``len(batch) * longest <= max_batch_tokens``.

    Sorting by length keeps padding small; the padded size of a batch (not the sum of lengths) is
    what bounds memory, so that is what the budget limits. An item longer than the budget gets a
    batch of its own.

    ``max_padding`` (a fraction) also closes a batch when adding the next item would make more than
    that share of its padded tokens padding. With a skewed length distribution (most texts short, a
    few long) a budget alone puts short texts behind a long one and pads them to its length; on CPU,
    where a batch of a few hundred tokens already runs at full speed, that padding is pure waste.

    Example:
        >>> pack_by_tokens([5, 100, 7, 90], max_batch_tokens=200)
        [[1, 3], [2, 0]]
        >>> pack_by_tokens([5, 100, 6, 90, 50], max_batch_tokens=400, max_padding=0.1)
        [[1, 3], [4], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    useful = 0
    for i in order:
        n = max(1, lengths[i])
        width = max(longest, n)
        padded = width * (len(current) + 1)
        full = max_batch_size is not None and len(current) >= max_batch_size
        wasteful = max_padding is not None and (padded - useful - n) > max_padding * padded
        if current and (padded > max_batch_tokens or full or wasteful):
            batches.append(current)
            current, longest, useful = [], 0, 0
            width = n
        current.append(i)
        longest = width
        useful += n
    if current:
        batches.append(current)
    return batches


def run_with_oom_retry(
    batches: list[list[int]],
    lengths: Sequence[int],
    run: Callable[[list[int]], T],
    max_batch_tokens: int,
    *,
    max_padding: float | None = None,
) -> Iterator[tuple[list[int], T]]:
    """Run ``run(batch)`` for each batch; on CUDA out-of-memory, halve the budget and re-split that batch.

    ``max_padding`` is passed to :func:`pack_by_tokens` when a batch is re-split.
    """
    torch = torch_module("local models")
    pending = list(reversed(batches))
    budget = max_batch_tokens
    while pending:
        batch = pending.pop()
        try:
            yield batch, run(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            budget = max(1, budget // 2)
            logger.warning(
                "CUDA out of memory on a batch of %d; retrying with max_batch_tokens=%d", len(batch), budget
            )
            sub = pack_by_tokens([lengths[i] for i in batch], budget, max_padding=max_padding)
            pending.extend(reversed([[batch[j] for j in b] for b in sub]))


def swap_onednn_linears(net: Any, probe: Callable[[], Any]) -> bool:
    """Run the float32 ``nn.Linear`` layers of ``net`` through oneDNN, unless that changes a result.

    Whether oneDNN is faster is decided before, by measurement (:func:`ragkit.runtime.probe_fp32_kernel`);
    this only makes the swap safe. ``probe()`` runs a fixed input through ``net`` and returns an array: it
    runs before and after the swap, and the swap is undone if the outputs differ or oneDNN fails. oneDNN
    computes the same float32 products from weights packed once. Returns whether the swap was kept.
    """
    import numpy as np

    torch = torch_module("local models")
    if not torch.backends.mkldnn.is_available():
        return False

    class OneDNNLinear(torch.nn.Module):
        def __init__(self, dense: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = dense.in_features, dense.out_features
            bias = dense.bias if dense.bias is not None else torch.zeros(dense.out_features)
            self.register_buffer("weight", dense.weight.detach().to_mkldnn(), persistent=False)
            self.register_buffer("bias", bias.detach().float().to_mkldnn(), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), self.weight, self.bias).to_dense()

    before = np.asarray(probe())
    swapped = []
    for name, module in list(net.named_modules()):
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, OneDNNLinear(module))
            swapped.append((parent, child, module))
    try:
        after = np.asarray(probe())
        ok = np.allclose(after, before, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(before).max())))
    except RuntimeError as e:  # an op or layout oneDNN does not support on this build
        logger.info("oneDNN linear layers failed (%s); keeping the default kernels", e)
        ok = False
    if not ok:
        for parent, child, module in swapped:
            setattr(parent, child, module)
    return ok and bool(swapped)


def fp32_linear_shapes(net: Any) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of every float32 ``nn.Linear`` of ``net``, one entry per layer."""
    torch = torch_module("local models")
    return [
        (m.in_features, m.out_features)
        for m in net.modules()
        if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
    ]
