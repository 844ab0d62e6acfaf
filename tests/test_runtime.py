"""The machine-dependent choices of ragkit.runtime, checked with faked CPU flags and faked timings.

No timing assertion anywhere: the kernel decision is tested on injected timings, and the rule on flags
given as data, so the same checks hold on machines with and without AMX or AVX512-BF16.
"""

from __future__ import annotations

import logging

import pytest

from ragkit import runtime
from ragkit.errors import ConfigError
from ragkit.runtime import (
    Runtime,
    auto_dtype,
    choose_fp32_kernel,
    cpu_flags,
    cpu_precision,
    probe_fp32_kernel,
    set_threads,
    usable_cpus,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

AMX_XEON = "flags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile\n"
ZEN4_EPYC = "flags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3_EPYC = "flags : fpu sse2 avx2 fma\n"
GRAVITON = "Features : fp asimd evtstrm aes sha2 crc32 atomics bf16 i8mm\n"


@pytest.mark.parametrize(
    ("cpuinfo", "precision"),
    [(AMX_XEON, "bfloat16"), (ZEN4_EPYC, "bfloat16"), (ZEN3_EPYC, "float32"), (GRAVITON, "float32")],
)
def test_precision_rule_on_cpu_flags(cpuinfo, precision):
    flags = cpu_flags(cpuinfo)
    assert cpu_precision(flags) == precision
    assert auto_dtype("cpu", flags=flags)[0] == precision


def test_precision_rule_edge_cases():
    assert cpu_precision(set()) == "float32"
    assert cpu_precision(["AMX_BF16".lower()]) == "bfloat16"
    # bf16 needs oneDNN in torch, and a model may opt out (the reranker does).
    assert auto_dtype("cpu", flags={"amx_bf16"}, onednn=False)[0] == "float32"
    name, why = auto_dtype("cpu", flags={"avx512_bf16"}, cpu_bfloat16=False)
    assert name == "float32" and "avx512_bf16" in why
    # Other devices: CUDA as before (bf16 where supported, else fp16), float32 on MPS.
    assert auto_dtype("cuda", cuda_bf16=True)[0] == "bfloat16"
    assert auto_dtype("cuda", cuda_bf16=False)[0] == "float16"
    assert auto_dtype("mps", flags={"amx_bf16"})[0] == "float32"


def test_cpu_flags_without_a_flags_line_fall_back_to_torch(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_flags("processor : 0\nmodel name : some CPU\n") == frozenset({"amx_bf16"})
    assert isinstance(cpu_flags(), frozenset)  # this machine's


def test_the_machine_rule_is_stable():
    # The default must not change from run to run: the same flags always give the same dtype.
    assert len({auto_dtype("cpu")[0] for _ in range(5)}) == 1


def test_kernel_decision_on_injected_timings():
    assert choose_fp32_kernel(1.0, 0.5) == "onednn"
    assert choose_fp32_kernel(1.2, 1.0) == "onednn"  # exactly the bar
    assert choose_fp32_kernel(1.19, 1.0) == "mkl"  # a small win keeps torch's default
    assert choose_fp32_kernel(1.0, 1.0) == "mkl"
    assert choose_fp32_kernel(0.5, 1.0) == "mkl"  # oneDNN slower (the AMX Xeon's large layers)
    assert choose_fp32_kernel(2.0, 1.0, min_speedup=3.0) == "mkl"


def _fake_clock(mkl: float, onednn: float):
    """A timer under which each MKL run takes ``mkl`` seconds and each oneDNN run ``onednn``.

    The probe reads the clock twice per run (start, end), MKL first in every round.
    """
    state = {"calls": 0, "now": 0.0}

    def clock() -> float:
        k = state["calls"]
        state["calls"] += 1
        if k % 2:  # the end of a run
            state["now"] += mkl if (k // 2) % 2 == 0 else onednn
        return state["now"]

    return clock, state


def test_probe_uses_the_timings_and_the_shapes():
    shapes = [(64, 128), (64, 128), (128, 64)]
    fast, state = _fake_clock(mkl=1.0, onednn=0.5)
    if not torch.backends.mkldnn.is_available():
        assert probe_fp32_kernel(shapes, timer=fast) == "mkl"
        return
    assert probe_fp32_kernel(shapes, timer=fast, rounds=2) == "onednn"
    assert state["calls"] == 2 * 2 * 2 * 2  # 2 distinct shapes x 2 rounds x 2 kernels x (start, end)
    assert probe_fp32_kernel(shapes, timer=_fake_clock(mkl=1.1, onednn=1.0)[0]) == "mkl"
    assert probe_fp32_kernel(shapes, timer=_fake_clock(mkl=1.0, onednn=2.0)[0]) == "mkl"
    assert probe_fp32_kernel([], timer=fast) == "mkl"


def test_probe_is_cached_per_process_and_shape_set(monkeypatch):
    runtime._probed.clear()
    first = probe_fp32_kernel([(32, 48)])
    assert first in ("mkl", "onednn")
    monkeypatch.setattr(runtime, "choose_fp32_kernel", lambda *a, **k: pytest.fail("measured twice"))
    assert probe_fp32_kernel([(32, 48)]) == first


def test_measured_choice_reaches_the_model(qwen3_embedding_dir, monkeypatch, caplog):
    import ragkit._backbone as backbone
    from ragkit.embedders import Qwen3Embedder

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN")
    monkeypatch.setattr(backbone, "probe_fp32_kernel", lambda shapes: "onednn")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        emb = Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32", max_length=32)
    assert emb.runtime.kernels == "onednn" and "measured faster" in emb.runtime.reasons[-1]
    assert f"runs on {emb.runtime}" in caplog.text
    assert "kernels='onednn'" in repr(emb)
    monkeypatch.setattr(backbone, "probe_fp32_kernel", lambda shapes: "mkl")
    assert Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32").runtime.kernels == "mkl"
    # An explicit argument or RAGKIT_KERNELS wins over the measurement; neither applies to bfloat16.
    assert Qwen3Embedder(
        qwen3_embedding_dir, device="cpu", dtype="float32", kernels="onednn"
    ).runtime.kernels == ("onednn")
    monkeypatch.setenv("RAGKIT_KERNELS", "onednn")
    fixed = Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="float32")
    assert fixed.runtime.kernels == "onednn" and "RAGKIT_KERNELS" in fixed.runtime.reasons[-1]
    assert Qwen3Embedder(qwen3_embedding_dir, device="cpu", dtype="bfloat16").runtime.kernels == "default"
    with pytest.raises(ConfigError, match="kernels"):
        Qwen3Embedder(qwen3_embedding_dir, device="cpu", kernels="blas")


def test_threads_are_capped_to_the_usable_cpus(qwen3_embedding_dir, monkeypatch):
    import ragkit._backbone as backbone
    from ragkit.embedders import Qwen3Embedder

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(backbone, "usable_cpus", lambda: 1)
        emb = Qwen3Embedder(qwen3_embedding_dir, device="cpu", max_length=32)
        assert emb.runtime.threads == 1 == torch.get_num_threads()
        assert "lowered from 2 to the 1 usable" in emb.runtime.reasons[-1]
        # Below the usable count, torch's setting (the user's) is left alone.
        monkeypatch.setattr(backbone, "usable_cpus", lambda: 64)
        assert Qwen3Embedder(qwen3_embedding_dir, device="cpu", max_length=32).runtime.threads == 1
    finally:
        torch.set_num_threads(before)


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        import os

        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
        assert set_threads() == usable_cpus() == torch.get_num_threads()
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ConfigError):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_reads_the_cgroup_quota(monkeypatch, tmp_path):
    assert 1 <= usable_cpus() <= (__import__("os").cpu_count() or 1)
    real = runtime.Path

    def fake(path):
        if str(path) == "/sys/fs/cgroup/cpu.max":
            (tmp_path / "cpu.max").write_text("150000 100000\n")
            return real(tmp_path / "cpu.max")
        return real(path)

    monkeypatch.setattr(runtime, "Path", fake)
    assert usable_cpus() == min(2, len(__import__("os").sched_getaffinity(0)))


def test_runtime_is_a_readable_record():
    rt = Runtime("cpu", "float32", "onednn", "sdpa", 4, ("explicit dtype", "kernels=onednn"))
    assert str(rt) == "cpu, float32, onednn kernels, sdpa attention, 4 threads"
    assert rt.reasons[1] == "kernels=onednn"
    with pytest.raises(AttributeError):
        rt.dtype = "bfloat16"  # type: ignore[misc]
