"""The backbone loader shared by the local embedder and the Qwen3 reranker.

One place decides how a transformers model runs here: the device, the precision (``dtype="auto"`` by the
CPU-capability rule of :mod:`ragkit.runtime`), the attention implementation, int8 quantisation and the
float32 kernels (MKL or oneDNN, by measurement); the result is a :class:`~ragkit.runtime.Runtime`,
logged at INFO. Imported only by modules that already need torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ragkit._deps import require
from ragkit._torch import (
    attn_implementation,
    dtype_choice,
    fp32_linear_shapes,
    quiet_loading,
    resolve_device,
    swap_onednn_linears,
    torch_module,
)
from ragkit.errors import ConfigError
from ragkit.runtime import KERNELS, Runtime, probe_fp32_kernel, usable_cpus

logger = logging.getLogger("ragkit")

_QUANTIZE = (None, "int8")


def check_kernels(kernels: Any) -> str:
    """``kernels`` validated: ``"auto"``, ``"mkl"`` or ``"onednn"``."""
    if kernels not in KERNELS:
        raise ConfigError(f"unknown kernels {kernels!r}: use one of {list(KERNELS)}")
    return str(kernels)


@dataclass
class Backbone:
    """A loaded model with its device, dtype and attention, before :meth:`finish` settles the kernels."""

    name: str
    model: Any
    device: Any
    dtype: Any
    attention: str
    kernels: str = "auto"
    quantize: str | None = None
    reasons: list[str] = field(default_factory=list)

    def finish(self, net: Any, probe: Callable[[], Any] | None = None) -> Runtime:
        """Move ``net`` (the model or the part of it that is kept) to the device in eval mode, quantise
        it or pick its float32 kernels, settle torch's threads, and log the :class:`Runtime`.

        ``probe()`` runs a fixed input through the model and returns an array; a oneDNN swap that
        changes it is undone.
        """
        torch = torch_module("local models")
        net.to(self.device).eval()
        cpu_fp32 = self.device.type == "cpu" and self.dtype == torch.float32
        if self.quantize == "int8":
            _quantize_int8(net)
            kernels, why = "int8", "int8 weights and dynamic int8 activations (torchao)"
        elif not cpu_fp32:
            kernels = "default"
            why = f"{str(self.dtype).removeprefix('torch.')} on {self.device.type}: torch's own kernels"
        else:
            kernels, why = self._fp32_kernels(net, probe)
        self.reasons.append(why)
        threads = torch.get_num_threads()
        usable = usable_cpus()
        if self.device.type == "cpu" and threads > usable:
            torch.set_num_threads(usable)
            self.reasons.append(f"torch threads lowered from {threads} to the {usable} usable CPUs")
            threads = usable
        runtime = Runtime(
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            kernels=kernels,
            attention=self.attention,
            threads=threads,
            reasons=tuple(self.reasons),
        )
        logger.info("%s runs on %s (%s)", self.name, runtime, "; ".join(runtime.reasons))
        return runtime

    def _fp32_kernels(self, net: Any, probe: Callable[[], Any] | None) -> tuple[str, str]:
        torch = torch_module("local models")
        wanted, why = self.kernels, "kernels=" + self.kernels
        fixed = os.environ.get("RAGKIT_KERNELS", "").strip().lower()
        if wanted == "auto" and fixed in ("mkl", "onednn"):
            wanted, why = fixed, f"RAGKIT_KERNELS={fixed}"
        if not torch.backends.mkldnn.is_available():
            return "mkl", "this torch build has no oneDNN"
        if wanted == "auto":
            wanted = probe_fp32_kernel(fp32_linear_shapes(net))
            why = (
                "oneDNN measured faster than MKL on the model's layer shapes"
                if wanted == "onednn"
                else "oneDNN measured no clear gain over MKL on the model's layer shapes"
            )
        if wanted == "onednn":
            if swap_onednn_linears(net, probe if probe is not None else (lambda: 0.0)):
                return "onednn", why
            return "mkl", why + ", but oneDNN's output differed: kept MKL"
        return "mkl", why


def load_backbone(
    source: str,
    *,
    name: str,
    auto_class: str,
    purpose: str,
    device: Any = "auto",
    dtype: Any = "auto",
    kernels: str = "auto",
    quantize: str | None = None,
    cpu_bfloat16: bool = True,
    show_progress: bool | None = None,
    **hub_kwargs: Any,
) -> Backbone:
    """Load ``source`` with ``transformers.<auto_class>`` on the chosen device, dtype and attention.

    ``cpu_bfloat16=False`` keeps ``dtype="auto"`` at float32 on every CPU. ``quantize="int8"`` runs on
    CPU from float32 weights (``dtype="auto"`` is float32 then). ``hub_kwargs`` go to ``from_pretrained``
    (``revision``, ``local_files_only``, ``subfolder``).
    """
    torch = torch_module(purpose)
    transformers = require("transformers", purpose=purpose)
    kernels = check_kernels(kernels)
    if quantize not in _QUANTIZE:
        raise ConfigError(f"unknown quantize {quantize!r}: use None or 'int8'")
    reasons: list[str] = []
    if quantize == "int8":  # a CPU path: torchao's dynamic int8 kernels are CPU/VNNI-fast
        resolved = resolve_device("cpu" if device in (None, "auto") else device)
        if resolved.type != "cpu":
            raise ConfigError(f"quantize='int8' runs on CPU; got device={device!r} (use bf16 on GPUs)")
        if dtype in (None, "auto"):
            torch_dtype, why = torch.float32, "int8 quantises float32 weights"
        else:
            torch_dtype, why = dtype_choice(dtype, resolved)
        if torch_dtype != torch.float32:
            raise ConfigError(f"quantize='int8' starts from float32 weights; got dtype={dtype!r}")
    else:
        resolved = resolve_device(device)
        torch_dtype, why = dtype_choice(dtype, resolved, cpu_bfloat16=cpu_bfloat16)
    reasons.append(why)

    impl = attn_implementation(resolved)
    if impl == "flash_attention_2" and torch_dtype not in (torch.float16, torch.bfloat16):
        impl = "sdpa"  # flash-attention kernels exist for 16-bit types only
    loader = getattr(transformers, auto_class)
    try:
        with quiet_loading(show_progress):
            model = loader.from_pretrained(source, dtype=torch_dtype, attn_implementation=impl, **hub_kwargs)
    except (ValueError, ImportError) as e:
        if impl == "eager":
            raise
        logger.info("%s does not support attn_implementation=%r (%s); using eager attention", name, impl, e)
        impl = "eager"
        with quiet_loading(show_progress):
            model = loader.from_pretrained(source, dtype=torch_dtype, attn_implementation=impl, **hub_kwargs)
    return Backbone(
        name=name,
        model=model,
        device=resolved,
        dtype=torch_dtype,
        attention=impl,
        kernels=kernels,
        quantize=quantize,
        reasons=reasons,
    )


def _quantize_int8(net: Any) -> None:
    """int8 weights (per channel) and dynamic int8 activations (per token) for every linear layer."""
    with quiet_loading():
        require("torchao", purpose="quantize='int8'")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        from torchao.quantization.quant_primitives import MappingType
    # Asymmetric activations: the inputs of the second MLP projection (after GELU/SiLU) are far from
    # symmetric, and a zero point keeps short inputs (titles, queries, "") within 0.99 cosine of
    # float32 on real weights, where the symmetric scheme dropped to 0.98; it costs a few per cent.
    quantize_(net, Int8DynamicActivationInt8WeightConfig(act_mapping_type=MappingType.ASYMMETRIC))
