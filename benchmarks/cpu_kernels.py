"""GFLOP/s of each CPU matrix kernel on the layer shapes of Qwen3-Embedding-0.6B, so "how close to this
machine's limit" is a number.

Kernels: float32 through torch's default path (MKL on x86 builds), float32 through oneDNN
(``torch._C._nn.mkldnn_linear`` on weights packed once, what ragkit's oneDNN swap uses), bfloat16
(torch's path, oneDNN with AVX512-BF16 / AMX where the CPU has them), and int8 dynamic quantisation
(``torch.ao.nn.quantized.dynamic.Linear``, fbgemm: VNNI where present). Shapes are the 0.6B's linear
layers (hidden 1024, intermediate 3072, q 2048, kv 1024) at 2,048 tokens; each kernel is timed
interleaved with the others, best of ``--reps``. Also records the CPU model, its flags and torch's threads.

Run:
    .venv/bin/python benchmarks/cpu_kernels.py                 # all cores
    .venv/bin/python benchmarks/cpu_kernels.py --threads 1

Writes ``cpu_kernels.json`` and ``cpu_kernels.md`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from index_search import cpu_model_and_flags  # noqa: E402

# (name, in_features, out_features) of Qwen3-Embedding-0.6B's linear layers.
SHAPES = [
    ("q_proj", 1024, 2048),
    ("k/v_proj", 1024, 1024),
    ("o_proj", 2048, 1024),
    ("gate/up_proj", 1024, 3072),
    ("down_proj", 3072, 1024),
]


def kernels(torch: Any, d_in: int, d_out: int) -> dict[str, Any]:
    lin = torch.nn.Linear(d_in, d_out).eval()
    out: dict[str, Any] = {"float32 (torch default)": (lin, torch.float32)}
    if torch.backends.mkldnn.is_available():
        w = lin.weight.detach().to_mkldnn()
        b = lin.bias.detach().to_mkldnn()

        def onednn(x: Any) -> Any:
            return torch._C._nn.mkldnn_linear(x.to_mkldnn(), w, b).to_dense()

        out["float32 (oneDNN)"] = (onednn, torch.float32)
    out["bfloat16"] = (torch.nn.Linear(d_in, d_out).to(torch.bfloat16).eval(), torch.bfloat16)
    try:
        q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(d_in, d_out)), {torch.nn.Linear}, dtype=torch.qint8
        )
        out["int8 dynamic (fbgemm)"] = (q, torch.float32)
    except (RuntimeError, AttributeError):  # no quantized engine on this build
        pass
    return out


def measure(tokens: int, reps: int, seconds: float) -> list[dict[str, Any]]:
    import torch

    rows = []
    for name, d_in, d_out in SHAPES:
        flops = 2 * tokens * d_in * d_out
        best: dict[str, float] = {}
        with torch.no_grad():
            contenders = kernels(torch, d_in, d_out)
            inputs = {dt: torch.randn(tokens, d_in).to(dt) for dt in {dt for _, dt in contenders.values()}}
            for run, dt in contenders.values():
                run(inputs[dt])  # warm-up: packing, first-call dispatch
            for _ in range(reps):
                for label, (run, dt) in contenders.items():
                    n, start = 0, time.perf_counter()
                    while time.perf_counter() - start < seconds:
                        run(inputs[dt])
                        n += 1
                    rate = flops * n / (time.perf_counter() - start) / 1e9
                    best[label] = max(best.get(label, 0.0), rate)
        rows.append({"layer": name, "shape": f"{tokens}x{d_in} @ {d_in}x{d_out}", "gflops": best})
        print(name, {k: round(v, 1) for k, v in best.items()}, file=sys.stderr)
    return rows


def markdown(result: dict[str, Any]) -> str:
    labels = list(result["rows"][0]["gflops"])
    m = result["machine"]
    lines = [
        "# CPU kernels on Qwen3-Embedding-0.6B's layer shapes (GFLOP/s, best of interleaved runs)",
        "",
        f"CPU: {m['cpu_model']} (flags: {', '.join(m['cpu_flags'])}); torch {m['torch']}, "
        f"{m['threads']} threads, capability {m['capability']}; "
        f"load {m['load_before']} -> {m['load_after']}.",
        "",
        "| layer | shape | " + " | ".join(labels) + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['layer']} | {r['shape']} | " + " | ".join(f"{r['gflops'][k]:.1f}" for k in labels) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048, help="rows of the activation matrix")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.4, help="time per kernel per repetition")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    rows = measure(args.tokens, args.reps, args.seconds)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            **cpu_model_and_flags(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
        "rows": rows,
    }
    table = markdown(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_kernels.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "cpu_kernels.md").write_text(table)
    return result


if __name__ == "__main__":
    main()
