"""Server load: ``ragkit serve`` with dynamic batching against the same server with ``--no-batching``.

Two ``ragkit serve`` processes run the same random Qwen3-Embedding-shaped model on 127.0.0.1, one with
dynamic batching (the default) and one with ``--no-batching`` (every request is its own model call).
``--clients`` concurrent clients (32) each send ``--requests`` embedding requests (50) one after
another, all clients at once, over keep-alive connections from one asyncio process. Requests are of
mixed sizes and kinds: 1 to 8 inputs of 3 to 60 words (plus a unique prefix), as documents, as queries
with the default task or with an explicit instruction (each text unique, so that any cross-talk between
requests would show).

Both servers get the same requests in the same order. Rounds alternate which server goes first so that
the load of other processes on a shared machine hits both alike; figures are medians over rounds. Every
answer is checked against the local embedder run on the same texts (cosine >= 0.9999, |diff| <= 1e-4):
a fast wrong answer would not count.

The model is a random Qwen3 of ``--hidden`` width and ``--layers`` layers (defaults 128 and 2, so that
the full run ends in minutes on a small shared CPU; ``--hidden 1024 --layers 28`` is Qwen3-Embedding-0.6B's
shape, for a GPU) with the test suite's small byte-level BPE tokenizer.

Usage:
    python benchmarks/server_load.py                       # 32 clients x 50 requests, 2 rounds, CPU
    python benchmarks/server_load.py --device cuda --hidden 1024 --layers 28
    python benchmarks/server_load.py --quick               # a smoke run: 8 clients x 5 requests, 1 round

Writes ``server_load.json`` and ``server_load.md`` to ``--out-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TASK = "Given a code snippet, find the function it calls"
WORDS = (
    "the of and to in is that for it as with was on be by this are from or an which have has not but can "
    "retrieval search query document passage ranking model language vector index embedding chunk answer "
    "capital France Paris Berlin Germany quick brown fox lazy dog rerankers score pairs relevance context "
    "generation system user question evidence source table figure result method data training evaluation"
).split()
MODES = {"batching": [], "no_batching": ["--no-batching"]}


def make_plan(clients: int, per_client: int, seed: int = 0) -> list[list[dict]]:
    """Per client, its requests: mixed sizes and kinds, every text unique."""
    rng = random.Random(seed)
    plan = []
    for c in range(clients):
        requests = []
        for j in range(per_client):
            n = rng.choice([1, 1, 1, 2, 4, 8])
            texts = [
                f"client {c} request {j} item {i}: "
                + " ".join(rng.choices(WORDS, k=rng.choice([3, 10, 30, 60])))
                for i in range(n)
            ]
            payload: dict = {"model": "bench", "input": texts, "encoding_format": "base64"}
            kind = rng.choice(["document", "document", "query", "task"])
            if kind == "query":
                payload["input_type"] = "query"
            elif kind == "task":
                payload["instruction"] = TASK
            requests.append(payload)
        plan.append(requests)
    return plan


def kind_of(payload: dict) -> str:
    return "task" if "instruction" in payload else payload.get("input_type", "document")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: Path, mode: str, device: str, dtype: str, threads: int | None, log: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = "import sys; from ragkit.serve import serve_main; sys.exit(serve_main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--embedder", str(model), "--served-model-name", "bench"]
    argv += [
        "--port",
        str(port),
        "--device",
        device,
        "--dtype",
        dtype,
        "--log-level",
        "warning",
        *MODES[mode],
    ]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=path)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} during startup")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready after {timeout:g}s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def drive(url: str, plan: list[list[dict]]) -> dict:
    """All clients at once, each sending its requests one after another. Returns timings and answers."""
    import httpx

    limits = httpx.Limits(max_connections=len(plan) + 4, max_keepalive_connections=len(plan) + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:

        async def one_client(requests: list[dict]) -> list[tuple[int, float, dict | None]]:
            out = []
            for payload in requests:
                t = time.perf_counter()
                r = await client.post("/v1/embeddings", json=payload)
                elapsed = time.perf_counter() - t
                out.append((r.status_code, elapsed, r.json() if r.status_code == 200 else None))
            return out

        start = time.perf_counter()
        answers = await asyncio.gather(*(one_client(r) for r in plan))
        wall = time.perf_counter() - start
    return {"wall": wall, "answers": answers}


def summarise(plan: list[list[dict]], run: dict) -> dict:
    flat = [a for client in run["answers"] for a in client]
    latencies = sorted(a[1] for a in flat)
    ok = [a for a in flat if a[0] == 200]
    texts = sum(len(p["input"]) for client in plan for p in client)
    tokens = sum(a[2]["usage"]["total_tokens"] for a in ok)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))] * 1000

    wall = run["wall"]
    return {
        "wall_s": wall,
        "requests": len(flat),
        "errors": len(flat) - len(ok),
        "requests_per_s": len(flat) / wall,
        "texts_per_s": texts / wall,
        "tokens_per_s": tokens / wall,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": latencies[-1] * 1000},
    }


def verify(
    plan: list[list[dict]], run: dict, reference: dict[tuple[str, str], np.ndarray], float32: bool
) -> dict:
    """Compare every answer with the local embedder's vectors for the texts that request sent.

    float32 must agree to float noise (cosine >= 0.9999, |diff| <= 1e-4). A 16-bit dtype's vectors move
    with the batch a text lands in, so there each vector must be nearest to its own text's reference
    among all the references of its kind (what a mix-up between requests would break) and within
    cosine 0.99 of it.
    """
    keys = {kind: [k for k in reference if k[0] == kind] for kind in {k[0] for k in reference}}
    matrices = {kind: np.stack([reference[k] for k in ks]) for kind, ks in keys.items()}
    position = {k: i for ks in keys.values() for i, k in enumerate(ks)}
    worst_cos, worst_diff, mismatches, not_nearest = 1.0, 0.0, 0, 0
    for requests, answers in zip(plan, run["answers"], strict=True):
        for payload, (status, _, body) in zip(requests, answers, strict=True):
            if status != 200:
                mismatches += 1
                continue
            kind = kind_of(payload)
            rows = sorted(body["data"], key=lambda d: d["index"])
            got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in rows])
            want = np.stack([reference[(kind, t)] for t in payload["input"]])
            cos = float((got * want).sum(1).min())  # unit vectors on both sides
            diff = float(np.abs(got - want).max())
            nearest = (got @ matrices[kind].T).argmax(1)
            missed = int((nearest != [position[(kind, t)] for t in payload["input"]]).sum())
            worst_cos, worst_diff, not_nearest = (
                min(worst_cos, cos),
                max(worst_diff, diff),
                not_nearest + missed,
            )
            ok = cos >= 0.9999 and diff <= 1e-4 if float32 else cos >= 0.99 and not missed
            mismatches += not ok
    return {
        "min_cosine": worst_cos,
        "max_abs_diff": worst_diff,
        "vectors_not_nearest_to_their_own_text": not_nearest,
        "mismatched_requests": int(mismatches),
        "criterion": "cosine >= 0.9999 and |diff| <= 1e-4"
        if float32
        else "nearest to its own text's reference, cosine >= 0.99",
    }


def reference_vectors(
    model: Path, device: str, dtype: str, plan: list[list[dict]]
) -> tuple[dict[tuple[str, str], np.ndarray], bool]:
    import torch

    from ragkit.models import load_embedder

    emb = load_embedder(model, device=device, dtype=dtype, quiet=True)
    groups: dict[str, list[str]] = {"document": [], "query": [], "task": []}
    for requests in plan:
        for p in requests:
            groups[kind_of(p)].extend(p["input"])
    out = {}
    for kind, texts in groups.items():
        if kind == "document":
            vectors = emb.embed_documents(texts)
        else:
            vectors = emb.embed_queries(texts, instruction=TASK if kind == "task" else None)
        out.update({(kind, t): v for t, v in zip(texts, vectors, strict=True)})
    return out, emb.dtype == torch.float32


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per mode (default 2, 1 with --quick)"
    )
    parser.add_argument("--device", default="cpu", help="the servers' torch device (cpu, cuda, ...)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32, ...")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size of the random Qwen3 model")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS of both servers (torch's CPU threads); default: torch's own, one per core. "
        "On a shared, oversubscribed CPU, 1 avoids OpenMP stalls of hundreds of ms per call",
    )
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the answer check")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 clients x 5 requests, 1 round")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="server_load", help="result file names: NAME.json and NAME.md")
    args = parser.parse_args(argv)
    clients, per_client = (8, 5) if args.quick else (args.clients, args.requests)
    rounds = args.rounds or (1 if args.quick else 2)

    import torch
    import transformers
    from tiny_qwen import build_qwen3

    plan = make_plan(clients, per_client)
    warmup = make_plan(4, 2, seed=1)
    # Qwen3's layout: a head per 64 of width, 128-wide heads from 1024 on (0.6B: 16 heads x 128).
    heads = max(1, args.hidden // 64)
    width = dict(
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=128 if args.hidden >= 1024 else 64,
    )
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    checks: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ragkit-server-bench-") as tmp:
        model = build_qwen3(
            Path(tmp) / "Qwen3-Embedding-Bench", kind="embedding", eos_postprocessor=True, **width
        )
        servers = {}
        try:
            for mode in MODES:
                log = Path(tmp) / f"{mode}.log"
                servers[mode] = start_server(model, mode, args.device, args.dtype, args.threads, log)
            for proc, url in servers.values():
                wait_ready(proc, url)
                asyncio.run(drive(url, warmup))
            order = list(MODES)
            for r in range(rounds):
                for mode in order if r % 2 == 0 else order[::-1]:
                    run = asyncio.run(drive(servers[mode][1], plan))
                    runs[mode].append(summarise(plan, run))
                    if args.verify and mode not in checks:
                        checks[mode] = run  # verified below, outside the timed part
                    s = runs[mode][-1]
                    print(
                        f"round {r + 1}/{rounds} {mode}: {s['requests_per_s']:.1f} req/s, "
                        f"p50 {s['latency_ms']['p50']:.0f} ms, p99 {s['latency_ms']['p99']:.0f} ms, "
                        f"{s['errors']} errors",
                        flush=True,
                    )
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
        verified = {}
        if args.verify:
            reference, float32 = reference_vectors(model, args.device, args.dtype, plan)
            verified = {mode: verify(plan, run, reference, float32) for mode, run in checks.items()}
    load_after = os.getloadavg()[0]

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    summary = {
        mode: {
            "requests_per_s": median(mode, "requests_per_s"),
            "texts_per_s": median(mode, "texts_per_s"),
            "tokens_per_s": median(mode, "tokens_per_s"),
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs[mode]),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs[mode]),
            "errors": sum(r["errors"] for r in runs[mode]),
        }
        for mode in MODES
    }
    texts = [len(p["input"]) for client in plan for p in client]
    words = [len(t.split()) for client in plan for p in client for t in p["input"]]
    result = {
        "benchmark": "server_load",
        "config": {
            "clients": clients,
            "requests_per_client": per_client,
            "rounds": rounds,
            "quick": args.quick,
            "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "dtype": args.dtype,
            "server_threads": args.threads,
            "result_name": args.name,
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "model": {**width, "kind": "random Qwen3Model, tests/tiny_qwen.py tokenizer"},
            "server_defaults": "max_batch_tokens 8192 on CPU / 65536 on CUDA, batch_wait_ms 2, "
            "max_queue 256, max_request_tokens 300000, header/body time-outs 10/60 s, max_connections 1024",
            "encoding_format": "base64",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "requests": {
            "total": len(texts),
            "inputs_per_request_mean": float(np.mean(texts)),
            "inputs_per_request_max": int(max(texts)),
            "words_per_text_mean": float(np.mean(words)),
            "words_per_text_max": int(max(words)),
        },
        "rounds": runs,
        "summary": summary,
        "ratio_batching_vs_no_batching": {
            "requests_per_s": summary["batching"]["requests_per_s"]
            / summary["no_batching"]["requests_per_s"],
            "p50_latency": summary["batching"]["p50_ms"] / summary["no_batching"]["p50_ms"],
            "p99_latency": summary["batching"]["p99_ms"] / summary["no_batching"]["p99_ms"],
        },
        "verification": verified,
    }
    write(result, args.out_dir, args.name)
    return result


def write(result: dict, out_dir: Path, name: str = "server_load") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    cfg, req, ratio = result["config"], result["requests"], result["ratio_batching_vs_no_batching"]
    model = cfg["model"]
    where = f"{cfg['device_name']}, " if cfg.get("device_name") else ""
    threads = f", {cfg['server_threads']} torch thread(s) per server" if cfg.get("server_threads") else ""
    lines = [
        "# Server load: dynamic batching against one request per model call",
        "",
        f"{cfg['clients']} concurrent clients x {cfg['requests_per_client']} requests to "
        f"`POST /v1/embeddings` ({req['total']} requests, {req['inputs_per_request_mean']:.1f} inputs per "
        f"request on average, up to {req['inputs_per_request_max']}; {req['words_per_text_mean']:.0f} words "
        f"per text on average, up to {req['words_per_text_max']}), loopback, base64 answers.",
        f"Model: random Qwen3, hidden {model['hidden_size']}, {model['num_hidden_layers']} layers, on "
        f"{cfg['device']}, dtype {cfg['dtype']}{threads} ({where}{cfg['cpus']} CPUs"
        f"{', ' + cfg['cpu_model'] if cfg.get('cpu_model') else ''}; load average "
        f"{cfg['load_average_before']:.1f} before, {cfg['load_average_after']:.1f} after). "
        f"Server defaults: {cfg['server_defaults']}.",
        f"Median of {cfg['rounds']} rounds per mode, the two servers alternating. torch {cfg['torch']}, "
        f"transformers {cfg['transformers']}, Python {cfg['python']}.",
        "",
        "| mode | requests/s | texts/s | tokens/s | p50 ms | p99 ms | errors | throughput vs no batching |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = result["summary"]["no_batching"]["requests_per_s"]
    for mode, s in result["summary"].items():
        lines.append(
            f"| {mode} | {s['requests_per_s']:.1f} | {s['texts_per_s']:.1f} | {s['tokens_per_s']:,.0f} | "
            f"{s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['errors']} | {s['requests_per_s'] / base:.2f}x |"
        )
    lines += [
        "",
        f"Batching vs no batching: {ratio['requests_per_s']:.2f}x the throughput, "
        f"{ratio['p50_latency']:.2f}x the median latency, {ratio['p99_latency']:.2f}x the p99 latency.",
    ]
    for mode, v in result["verification"].items():
        lines.append(
            f"Checked against the local embedder ({mode}, one round; {v['criterion']}): "
            f"{v['mismatched_requests']} mismatched requests, {v['vectors_not_nearest_to_their_own_text']} "
            f"vectors nearer another text, min cosine {v['min_cosine']:.6f}, "
            f"max |diff| {v['max_abs_diff']:.1e}."
        )
    lines += [
        "",
        "Command: `python benchmarks/server_load.py "
        + " ".join(
            [
                f"--device {cfg['device']}",
                f"--dtype {cfg['dtype']}",
                *([f"--threads {cfg['server_threads']}"] if cfg.get("server_threads") else []),
                *([f"--name {name}"] if name != "server_load" else []),
                f"--hidden {model['hidden_size']}",
                f"--layers {model['num_hidden_layers']}",
            ]
            + (
                ["--quick"]
                if cfg["quick"]
                else [f"--clients {cfg['clients']}", f"--requests {cfg['requests_per_client']}"]
            )
        )
        + "`",
        "",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
