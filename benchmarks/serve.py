"""Load on the tail server over loopback: throughput and latency, with and without dynamic
batching, float32 and 8-bit tensors.

The network is exported at a split point (``isplit export``; or ``--export DIR`` reuses an export)
and the head is run once on ``--images`` Fashion-MNIST test images, so the load measures the
server and the protocol, not the head. The server runs as its own process (``isplit serve``),
once with dynamic batching (``--max-batch``, ``--batch-wait-ms``) and once without
(``--max-batch 1``); both serve the float32 and the 8-bit model. ``--concurrency`` client threads,
each with one kept-alive HTTP connection, send ``--requests`` requests in all per setting
(binary tensor extension, one image per request unless ``--images-per-request``), as fast as the
answers come back. Per setting: requests and images per second, latency percentiles (request
sent -> response read, ms), the mean batch the server ran (its ``batch_size`` parameter), the body
size, how many answers matched the unsplit network's class, the server's resident memory before
and after the load (``server_rss_mb``), and its exit code on SIGTERM (0: drained).

    python benchmarks/serve.py [--requests 2000] [--concurrency 16] [--point features.13] ...

Prints one JSON object. Figures are only meaningful on a machine that runs nothing else.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import isplit
from isplit.deploy.client import request_tensors
from isplit.deploy.export import export_split
from isplit.deploy.manifest import Manifest
from isplit.deploy.parts import HEAD
from isplit.deploy.runtime import load_programs
from isplit.deploy.wire import HEADER, decode_response, encode_request
from isplit.models import load_recorded


def start_server(
    folder: Path, max_batch: int, wait_ms: float, device: str, runtime: str
) -> tuple[subprocess.Popen, str]:
    """``isplit serve`` on a free port in its own process; ``(process, url)``."""
    cmd = [sys.executable, "-m", "isplit.cli", "serve", str(folder), "--port", "0",
           "--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms),
           "--device", device, "--runtime", runtime]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    m = re.search(r"at (http://[\d.]+:\d+)/v2", line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stdout.read()}")
    return proc, m.group(1)


def stop_server(proc: subprocess.Popen) -> int | None:
    """SIGTERM (the server drains); its exit code, None if it had to be killed."""
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def rss_mb(proc: subprocess.Popen) -> float | None:
    """The server's resident memory (Linux), MB."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) / 1024
    except (OSError, TypeError):
        return None


def load(url: str, path: str, bodies: list[tuple[bytes, dict]], expected: np.ndarray,
         requests: int, concurrency: int) -> dict:  # fmt: skip
    """Send ``requests`` requests from ``concurrency`` threads; the figures of :func:`main`."""
    host, port = url.split("://")[1].split(":")
    latencies: list[float] = []
    batches: list[int] = []
    correct = errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        nonlocal correct, errors
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.connect()
        start.wait()
        mine_lat, mine_batch, mine_ok, mine_err = [], [], 0, 0
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, headers = bodies[i % len(bodies)]
            t = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            mine_lat.append(time.perf_counter() - t)
            if resp.status != 200:
                mine_err += 1
                continue
            doc, out = decode_response(data, resp.getheader(HEADER))
            mine_batch.append(doc["parameters"]["batch_size"])
            want = expected[i % len(bodies)]
            mine_ok += int((out["logits"].argmax(1) == want).all())
        conn.close()
        with lock:
            latencies.extend(mine_lat)
            batches.extend(mine_batch)
            correct += mine_ok
            errors += mine_err

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    lat = 1e3 * np.array(latencies)
    per_request = len(expected[0])
    return {
        "requests_per_s": requests / wall,
        "images_per_s": requests * per_request / wall,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "mean": float(lat.mean()),
        },
        "mean_batch_images": float(np.mean(batches)) if batches else None,
        "request_bytes": len(bodies[0][0]),
        "errors": errors,
        "correct": correct / requests,
        "seconds": wall,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo-vgg16")
    p.add_argument("--point", default="features.13", help="split point (default features.13)")
    p.add_argument("--export", default=None, help="reuse this export folder (its own point)")
    p.add_argument("--requests", type=int, default=2000, help="requests per setting (2000)")
    p.add_argument("--concurrency", type=int, default=16, help="client threads (16)")
    p.add_argument("--images", type=int, default=256, help="distinct test images (256)")
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=16, help="server batch bound (16)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="server batch wait (2)")
    p.add_argument("--device", default="cpu", help="the server's --device (cpu)")
    p.add_argument("--runtime", default="auto", help="the server's --runtime (auto)")
    p.add_argument("--data-root", default=None, help="where the Fashion-MNIST files are")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.export:
            folder = Path(args.export)
            manifest = Manifest.load(folder)
            loaded = load_recorded(manifest.model)
        else:
            loaded = isplit.load_model(args.model)
            folder = Path(tmp) / "export"
            manifest = export_split(loaded, args.point, folder)
        data = isplit.load_dataset("fashion-mnist", "test", loaded.preprocess, root=args.data_root)
        k = args.images_per_request
        n = max(1, args.images // k) * k
        x = torch.stack([data[i][0] for i in range(n)])
        with torch.no_grad():
            expected = loaded.model(x).argmax(1).numpy().reshape(-1, k)
        z = load_programs(folder, manifest, [HEAD])[HEAD](x.numpy()).reshape(
            -1, k, *manifest.transmitted_shape
        )
        bodies = {}
        for name, quantize in (("fp32", False), ("int8", True)):
            bodies[name] = []
            for batch in z:
                body, header_length = encode_request(request_tensors(batch, quantize))
                bodies[name].append((body, {HEADER: str(header_length)}))
        settings = {"batched": (args.max_batch, args.batch_wait_ms), "unbatched": (1, 0.0)}
        results = {}
        for setting, (max_batch, wait) in settings.items():
            proc, url = start_server(folder, max_batch, wait, args.device, args.runtime)
            exit_code = None
            try:
                for name, model in (("fp32", manifest.name), ("int8", manifest.int8_name)):
                    path = f"/v2/models/{model}/infer"
                    load(url, path, bodies[name][:4], expected, min(50, args.requests), 2)
                    idle = rss_mb(proc)
                    results[f"{name}_{setting}"] = load(
                        url, path, bodies[name], expected, args.requests, args.concurrency
                    )
                    results[f"{name}_{setting}"]["server_rss_mb"] = {
                        "idle": idle,
                        "after": rss_mb(proc),
                    }
            finally:
                exit_code = stop_server(proc)
            for name in ("fp32", "int8"):
                results[f"{name}_{setting}"]["server_exit_code"] = exit_code
    ratio = {
        f"batching_speedup_{name}": results[f"{name}_batched"]["requests_per_s"]
        / results[f"{name}_unbatched"]["requests_per_s"]
        for name in ("fp32", "int8")
    }
    report = {
        "model": manifest.model["model"],
        "point": manifest.point,
        "transmitted_shape": list(manifest.transmitted_shape),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "images_per_request": k,
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "server_device": args.device,
        "server_runtime": args.runtime,
        "settings": results,
        "ratios": {
            **ratio,
            "int8_bytes_vs_fp32": results["int8_batched"]["request_bytes"]
            / results["fp32_batched"]["request_bytes"],
        },
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
