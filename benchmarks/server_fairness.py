"""Server fairness: how long small requests wait while one huge request runs (``ragkit serve``'s scheduler).

One ``ragkit serve`` app (in this process, on 127.0.0.1) runs a random Qwen3-Embedding-shaped model.
``--clients`` clients (4) each send small requests (one text of about 20 words) one after another, first
on an idle server, then while one client's huge request (``--huge-inputs`` texts of ``--huge-chars``
characters; 200 x 8,000 by default) runs. The scheduler serves the huge request in sub-batches of at
most ``max_batch_tokens`` and puts newcomers first (in a call the huge request only has its share of),
so a small request should wait about one model call; in a first-in-first-out queue it would wait for the
whole huge request.

Usage:
    python benchmarks/server_fairness.py                 # CPU, a few minutes on a small shared machine
    python benchmarks/server_fairness.py --quick         # a smoke run

Writes ``server_fairness.json`` and ``server_fairness.md`` to ``--out-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WORDS = "retrieval search query document passage ranking model language vector index embedding chunk".split()


def small_texts(client: int, n: int) -> list[str]:
    return [f"client {client} request {j}: " + " ".join(WORDS[(client + j) % 6 :] * 2) for j in range(n)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


async def small_clients(url: str, clients: int, per_client: int, stop: asyncio.Event | None) -> list[float]:
    import httpx

    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(c: int) -> None:
            for text in small_texts(c, per_client):
                if stop is not None and stop.is_set():
                    return
                start = time.perf_counter()
                r = await client.post("/v1/embeddings", json={"input": [text], "encoding_format": "base64"})
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one(c) for c in range(clients)))
    return latencies


async def contended(url: str, args: argparse.Namespace) -> tuple[float, list[float]]:
    import httpx

    huge = [
        f"{i:05d} " + ("lorem ipsum dolor sit amet " * (args.huge_chars // 27 + 1))[: args.huge_chars]
        for i in range(args.huge_inputs)
    ]
    done = asyncio.Event()

    async def send_huge() -> float:
        async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
            start = time.perf_counter()
            r = await client.post("/v1/embeddings", json={"input": huge, "encoding_format": "base64"})
            r.raise_for_status()
            done.set()
            return time.perf_counter() - start

    huge_task = asyncio.create_task(send_huge())
    await asyncio.sleep(1.0)  # the huge request is under way
    latencies = await small_clients(url, args.clients, args.per_client, done)
    return await huge_task, latencies


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=20, help="small requests per client")
    parser.add_argument("--huge-inputs", type=int, default=200)
    parser.add_argument("--huge-chars", type=int, default=8000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared CPU)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 clients, 50 x 2,000 characters")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.per_client, args.huge_inputs, args.huge_chars = 2, 5, 50, 2000

    import torch
    from tiny_qwen import build_qwen3

    from ragkit.serve import BackgroundServer, create_app

    torch.set_num_threads(args.threads)
    heads = max(1, args.hidden // 64)
    width = dict(
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=64,
    )

    class Timings:
        def __init__(self) -> None:
            self.batches: list[tuple[int, int, float]] = []

        def on_batch(self, kind, size, tokens, seconds):
            self.batches.append((size, tokens, seconds))

        def on_queue(self, kind, depth):
            pass

        def on_model_load(self, kind, seconds):
            pass

    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="ragkit-fairness-") as tmp:
        model = build_qwen3(
            Path(tmp) / "Qwen3-Embedding-Bench", kind="embedding", eos_postprocessor=True, **width
        )
        app = create_app(
            str(model),
            device="cpu",
            dtype="float32",
            max_request_tokens=None,
            max_inputs=max(2048, args.huge_inputs),
            observer=timings,
        )
        with BackgroundServer(app) as server:
            asyncio.run(small_clients(server.url, 2, 3, None))  # warm-up
            idle = asyncio.run(small_clients(server.url, args.clients, args.per_client, None))
            first = len(timings.batches)
            huge_s, busy = asyncio.run(contended(server.url, args))
            budget = server.app.state.ragkit.models[0]._budget
    calls = timings.batches[first:]
    seconds = [s for _, _, s in calls]
    result = {
        "benchmark": "server_fairness",
        "clients": args.clients,
        "small_requests_idle": len(idle),
        "small_requests_during_huge": len(busy),
        "huge": {"inputs": args.huge_inputs, "chars": args.huge_chars, "seconds": round(huge_s, 2)},
        "max_batch_tokens": budget,
        "model_calls_during_run": len(calls),
        "call_seconds": {"p50": round(statistics.median(seconds), 4), "max": round(max(seconds), 4)},
        "small_latency_idle_ms": {
            "p50": round(1000 * statistics.median(idle), 1),
            "p99": round(1000 * quantile(idle, 0.99), 1),
        },
        "small_latency_during_huge_ms": {
            "p50": round(1000 * statistics.median(busy), 1),
            "p99": round(1000 * quantile(busy, 0.99), 1),
            "max": round(1000 * max(busy), 1),
        },
        "model": f"random Qwen3, hidden {args.hidden}, {args.layers} layers, cpu, float32, "
        f"{args.threads} thread(s)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": "python benchmarks/server_fairness.py" + (" --quick" if args.quick else ""),
    }
    write(result, args.out_dir)
    return result


def write(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "server_fairness.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    idle, busy, calls = (
        result["small_latency_idle_ms"],
        result["small_latency_during_huge_ms"],
        result["call_seconds"],
    )
    huge = result["huge"]
    lines = [
        "# Server fairness: small requests while a huge one runs",
        "",
        f"{result['clients']} clients send one-text embedding requests one after another; then the same "
        f"while one request of {huge['inputs']} x {huge['chars']:,} characters runs ({huge['seconds']} s). "
        f"Model: {result['model']}; {result['machine']}; max_batch_tokens {result['max_batch_tokens']}.",
        "",
        "| small requests | n | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| idle server | {result['small_requests_idle']} | {idle['p50']} | {idle['p99']} | |",
        f"| during the huge request | {result['small_requests_during_huge']} | {busy['p50']} | {busy['p99']} "
        f"| {busy['max']} |",
        "",
        f"Model calls during the run: {result['model_calls_during_run']}, median "
        f"{1000 * calls['p50']:.0f} ms, longest {1000 * calls['max']:.0f} ms. A small request waits for the "
        "call under way, then runs in the next one, which the huge request only has its share of (so about "
        f"one call in all), not for the whole huge request ({huge['seconds']} s).",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    (out_dir / "server_fairness.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
