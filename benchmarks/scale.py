"""Scale: isplit's analysis on several processes, its memory, and its speed on a GPU.

Prints one JSON object. Without ``--gpu`` (CPU, a few minutes at most):

``cpu_scaling``
    images/s of ``isplit.analyze`` on the packaged ``demo-vgg16`` (1 x 32 x 32 inputs) over
    ``--images`` synthetic images, run by torchrun on 1 and on 2 processes (gloo, ``--threads``
    torch threads each, default 1), timed inside the processes from a barrier before
    ``analyze()`` to one after it (tracing, loading, the gather and the merge included).
    ``scaling_efficiency`` = images/s on 2 processes / (2 x images/s on 1).
``memory``
    the peak resident memory (``ru_maxrss``) of a fresh process that analyses ``--memory-images``
    and 10x as many synthetic images (generated per item, as a decoding data set yields them),
    beside the size the input images would take if they were all held, and the per-image curves
    (the one thing that grows with the data set: images x points x 4 bytes).

With ``--gpu`` (self-contained; what the GPU check runs; about 2 minutes on an H200):

``gpu.models.<name>.<precision>``
    for torchvision ResNet-50 and VGG16 (``weights=None``, 10 classes) at ``--size`` px, batch
    ``--batch-size``, in fp32 and bf16: images/s of the ``bare`` pass (forward + activation-
    gradient backward of the untraced model, data already on the GPU, as in
    ``benchmarks/throughput.py``, under the same autocast and memory format as isplit), of the
    ``engine`` (isplit's ``GradCAM`` on the same GPU data), and of ``isplit.analyze`` from a
    ``Dataset`` that makes each image on the CPU (uint8 pixels -> float -> normalised, in the
    loader's worker processes), end to end (``analyze_images_per_s``: tracing, fingerprinting,
    worker start-up included) and in steady state (``steady_images_per_s``: the extra time of
    ``--analyze-images`` over a two-batch run; ``setup_seconds``: the rest, the fixed cost of
    tracing, fingerprinting the weights and starting the workers); each with its ratio to the
    bare pass (target >= 0.9); ``data_wait_share``: the share of analyze's loop spent waiting
    for the loader (near 0 when the GPU sets the pace). The bare pass and the engine run on
    ``--images`` images.
``gpu.models.<name>.<precision>.folder``
    the same, as a user runs it: ``isplit analyze`` on the command line (a fresh process) over
    an image folder of ``--folder-images`` JPEG files (320 x 256 px, resized to 256 and cropped
    to ``--size``, decoded by the workers, 8-bit transport): ``loop_ratio_to_bare`` (images/s
    of its loop, from ``curves.json``'s ``timing``), ``end_to_end_ratio_to_bare`` (images over
    the whole command's wall time: interpreter start, imports, tracing, workers included) and
    ``setup_seconds``. ``gpu.folder_loader`` is the loader alone on that folder, uint8 against
    float32 transport (``benchmarks/loader.py``), with the bytes per image moved.
``gpu.models.<name>.bf16_vs_fp32``
    the relative error of the bf16 global CUI curve against fp32 (max and median over the
    points, and in log10 decades), and whether the best split and the candidates change.
``gpu.cuda_matches_cpu``
    the same small analysis (ResNet-18, 64 px) on the GPU and on the CPU: the largest relative
    difference of the curves (TF32 convolutions make it ~1e-3, not 0).

Every measurement is attempted on its own: a failure is recorded under ``errors`` and the
others go on; past ``--budget-s`` seconds the remaining ones are skipped. ``--json-out FILE``
also writes the report after each measurement, so a run cut short leaves what it measured.

    python benchmarks/scale.py [--images 4000] [--memory-images 2000]
    PYTHONPATH=src python3 benchmarks/scale.py --gpu [--json-out scale-gpu.json]
    python benchmarks/scale.py --gpu --device cpu --images 16 --size 32 --models resnet18
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput.py, beside this file

import isplit  # noqa: E402
from isplit import distributed  # noqa: E402
from isplit.analysis import analyze  # noqa: E402
from isplit.graph import ModelGraph  # noqa: E402
from isplit.importance import GradCAM, autocast_dtype  # noqa: E402
from loader import loader_rate as folder_loader_rate  # noqa: E402
from loader import make_jpeg_folder  # noqa: E402
from throughput import CLASSES, bare, build_model  # noqa: E402

TARGETS = {"ratio_to_bare": 0.9}
FOLDER_PATHS = ("float32", "uint8")  # the loader's transports
DEMO = "demo-vgg16"
#: the CUI pass alone: what these figures measure (analyze computes pca-probe too by default)
CUI_ALONE = "cui"


class SyntheticImages(Dataset):
    """``n`` images made on the CPU item by item, the way a user's decoding data set yields
    them: uint8 pixels (from a bank of 64 random images, so that making them costs little
    beside the network) -> float in [0, 1] -> normalised. Image ``i`` is bank image ``i % 64``
    with label ``i % num_classes``."""

    BANK = 64

    def __init__(self, n: int, shape: Sequence[int], num_classes: int = CLASSES, seed: int = 0):
        self.n, self.shape, self.num_classes = n, tuple(shape), num_classes
        g = torch.Generator().manual_seed(seed)
        self.bank = torch.randint(0, 256, (self.BANK, *shape), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = self.bank[i % self.BANK]
        return pixels.float().div_(255).sub_(0.45).div_(0.225), i % self.num_classes


class Report:
    """The JSON report, measurement by measurement: failures recorded, a time budget kept."""

    def __init__(self, path: str | None, budget_s: float):
        self.doc: dict = {"errors": {}}
        self.path, self.budget_s, self.start = path, budget_s, time.monotonic()

    def attempt(self, label: str, fn: Callable[[], object]) -> object | None:
        """``fn()``, or None with the exception (or the exhausted time budget) recorded under
        ``errors[label]``."""
        if time.monotonic() - self.start > self.budget_s:
            self.doc["errors"][label] = f"skipped: past the {self.budget_s:.0f} s budget"
            return None
        try:
            return fn()
        except Exception as e:  # one failure must not lose the other measurements
            traceback.print_exc()
            first = str(e).splitlines()[0] if str(e) else ""
            self.doc["errors"][label] = f"{type(e).__name__}: {first}"
            return None

    def save(self) -> None:
        self.doc["seconds"] = round(time.monotonic() - self.start, 1)
        if self.path:
            tmp = Path(f"{self.path}.tmp")
            tmp.write_text(json.dumps(self.doc, indent=2))
            tmp.replace(self.path)


# --------------------------------------------------------------------------------------------
# CPU: 1 vs 2 processes, and peak memory
# --------------------------------------------------------------------------------------------


def _env(threads: int | None) -> dict:
    """The environment of a worker process: this isplit importable, ``threads`` threads (None:
    torch's default)."""
    src = str(Path(isplit.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    threads_env = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
    return {**os.environ, "PYTHONPATH": path, **threads_env}


def _worker_args(args: argparse.Namespace, kind: str, images: int) -> list[str]:
    return [
        __file__,
        "--worker",
        kind,
        "--images",
        str(images),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]


def cpu_scaling(args: argparse.Namespace) -> dict:
    ips = {}
    for k in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "result.json"
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(k),
                *_worker_args(args, "throughput", args.images),
                "--result",
                str(result),
            ]
            subprocess.run(cmd, env=_env(args.threads), check=True, stdout=subprocess.DEVNULL)
            doc = json.loads(result.read_text())
        ips[str(k)] = round(doc["images"] / doc["seconds"], 2)
    return {
        "model": DEMO,
        "images": args.images,
        "batch_size": args.batch_size,
        "threads_per_process": args.threads,
        "images_per_s": ips,
        "speedup": round(ips["2"] / ips["1"], 3),
        "scaling_efficiency": round(ips["2"] / (2 * ips["1"]), 3),
    }


def worker_throughput(args: argparse.Namespace) -> None:
    """One process of :func:`cpu_scaling` (under torchrun)."""
    if distributed.launched():
        distributed.init("cpu")
    torch.set_num_threads(args.threads)
    loaded = isplit.load_model(DEMO)
    pp = loaded.preprocess
    shape = (pp.channels, pp.size, pp.size)
    world = distributed.world_size()
    kw = {"batch_size": args.batch_size, "predictors": CUI_ALONE}
    analyze(loaded, SyntheticImages(2 * args.batch_size * world, shape), **kw)
    distributed.barrier()
    start = time.perf_counter()
    analyze(loaded, SyntheticImages(args.images, shape), **kw)
    distributed.barrier()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        Path(args.result).write_text(json.dumps({"images": args.images, "seconds": seconds}))
    distributed.finish()


def memory(args: argparse.Namespace) -> dict:
    runs = []
    for n in (args.memory_images, 10 * args.memory_images):
        cmd = [sys.executable, *_worker_args(args, "memory", n)]
        done = subprocess.run(cmd, env=_env(args.threads), check=True, capture_output=True)
        runs.append(json.loads(done.stdout))
    small, large = runs
    return {
        "model": DEMO,
        "runs": runs,
        "growth_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1),
        "ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "extra_inputs_mb_if_held": round(
            large["inputs_mb_if_held"] - small["inputs_mb_if_held"], 1
        ),
        "extra_per_image_curves_mb": round(large["per_image_mb"] - small["per_image_mb"], 2),
    }


def worker_memory(args: argparse.Namespace) -> None:
    """One process of :func:`memory`: analyse, print the peak resident memory as JSON."""
    torch.set_num_threads(args.threads)
    loaded = isplit.load_model(DEMO)
    pp = loaded.preprocess
    shape = (pp.channels, pp.size, pp.size)
    kw = {"batch_size": args.batch_size, "predictors": CUI_ALONE}
    result = analyze(loaded, SyntheticImages(args.images, shape), **kw)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    doc = {
        "images": args.images,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "inputs_mb_if_held": round(args.images * 4 * int(np.prod(shape)) / 2**20, 1),
        "per_image_mb": round(result.per_image.nbytes / 2**20, 2),
    }
    print(json.dumps(doc))


# --------------------------------------------------------------------------------------------
# GPU: isplit.analyze against the bare pass, fp32 and bf16
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _autocast(precision: str, device: torch.device):
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _on_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """A copy of ``model`` on ``device`` (the original stays on the CPU for ``analyze``)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).to(device, memory_format=fmt)


def bench_on_device(
    key: str, model: nn.Module, precision: str, args: argparse.Namespace, report: Report
) -> dict:
    """The bare pass and isplit's engine on data already on the device."""
    device, bs, n, size = torch.device(args.device), args.batch_size, args.images, args.size
    channels_last = device.type == "cuda"  # what analyze does
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gpu_model = _on_device(model, device, channels_last)
    graph = ModelGraph(gpu_model, (3, size, size))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, 3, size, size, device=device, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, CLASSES, (n,), device=device, generator=g)

    def bare_ips() -> float:
        run = bare(gpu_model, graph, bs)
        with _autocast(precision, device):
            run(x[:bs], y[:bs])  # warm-up
            times = [_timed(lambda: run(x, y), device)[0] for _ in range(args.repeats)]
        return round(n / statistics.median(times), 1)

    def engine_ips() -> float:
        cam = GradCAM(graph, [p.name for p in graph.points], precision=precision).to(device)

        def run() -> None:
            for xb, yb in zip(x.split(bs), y.split(bs)):
                cam(xb, yb)

        cam(x[:bs], y[:bs])  # warm-up
        times = [_timed(run, device)[0] for _ in range(args.repeats)]
        return round(n / statistics.median(times), 1)

    out = {"channels_last": channels_last}
    out["bare_images_per_s"] = report.attempt(f"{key}.bare", bare_ips)
    report.save()
    out["engine_images_per_s"] = report.attempt(f"{key}.engine", engine_ips)
    report.save()
    return out


def loader_rate(args: argparse.Namespace) -> float:
    """Images/s of the loader alone (what analyze's loader gives on this device), so that a
    pipeline slower than the bare pass can be told from a data set slower than the GPU."""
    from isplit.data import make_loader

    data = SyntheticImages(args.analyze_images, (3, args.size, args.size))
    loader = make_loader(data, args.batch_size, workers=args.workers, device=args.device)
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return round(seen / (time.perf_counter() - start), 1)


def bench_precision(
    name: str, model: nn.Module, precision: str, args: argparse.Namespace, report: Report
) -> tuple[dict, object]:
    """Bare pass, engine and ``analyze`` of one model in one precision; the analysis result."""
    device, bs, n, size = torch.device(args.device), args.batch_size, args.analyze_images, args.size
    key = f"{name}.{precision}"
    out = bench_on_device(key, model, precision, args, report)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the device copies of bench_on_device are gone

    def run_analyze(images: int):
        data = SyntheticImages(images, (3, size, size))
        kw = {"batch_size": bs, "device": device, "precision": precision, "workers": args.workers}
        kw["predictors"] = CUI_ALONE
        return _timed(lambda: analyze(model, data, **kw), device)

    small = min(2 * bs, n)
    analysis = {}

    def pipeline() -> dict:
        run_analyze(small)  # warm-up: CUDA context, cuDNN, worker start-up paths
        t_small, _ = run_analyze(small)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_full, result = run_analyze(n)
        analysis["result"] = result
        steady = (n - small) / (t_full - t_small) if n > small and t_full > t_small else None
        doc = {
            "analyze_images": n,
            "analyze_images_per_s": round(n / t_full, 1),
            "steady_images_per_s": None if steady is None else round(steady, 1),
            "analyze_seconds": round(t_full, 3),
            # the fixed cost: tracing, fingerprinting the weights, starting the workers
            "setup_seconds": None if steady is None else round(t_small - small / steady, 3),
            # the share of analyze's loop spent waiting for the loader (Analysis.timing): high
            # when the data set, not the GPU, sets the pace
            "data_wait_share": (result.timing or {}).get("data_wait_share"),
        }
        if device.type == "cuda":
            doc["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        return doc

    measured = report.attempt(f"{key}.analyze", pipeline)
    if measured is None and args.workers != 0:  # e.g. too little shared memory for workers
        kept, args.workers = args.workers, 0
        measured = report.attempt(f"{key}.analyze_without_workers", pipeline)
        args.workers = kept
        if measured is not None:
            measured["workers"] = 0
    out.update(measured or {})
    if out["bare_images_per_s"]:
        for k in ("engine", "analyze", "steady"):
            if out.get(f"{k}_images_per_s"):
                out[f"{k}_ratio_to_bare"] = round(
                    out[f"{k}_images_per_s"] / out["bare_images_per_s"], 4
                )
    report.save()
    return out, analysis.get("result")


def bench_folder(name: str, precision: str, args: argparse.Namespace, bare_ips: float) -> dict:
    """``isplit analyze`` on the command line over the JPEG folder, against the bare pass."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "isplit", "analyze", "--model", name, "--weights", "none"]
        cmd += ["--data", str(args.folder), "--split", "all"]  # every image of the folder
        cmd += ["--image-size", str(args.size), "--quiet"]
        cmd += ["--device", args.device, "--precision", precision, "--out", tmp]
        cmd += ["--predictors", CUI_ALONE]
        cmd += ["--batch-size", str(args.batch_size), "--checkpoint-every", "1000000"]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env(None))
        wall = time.perf_counter() - start
        doc = json.loads((Path(tmp) / "curves.json").read_text())
    timing, images = doc["timing"], doc["dataset"]["images"]
    return {
        "command": " ".join(cmd[1:]),
        "images": images,
        "loop_images_per_s": timing["images_per_s"],
        "loop_ratio_to_bare": round(timing["images_per_s"] / bare_ips, 4),
        "end_to_end_images_per_s": round(images / wall, 1),
        "end_to_end_ratio_to_bare": round(images / wall / bare_ips, 4),
        "setup_seconds": timing.get("setup_seconds"),
        "data_wait_share": timing.get("data_wait_share"),
    }


def folder_loader(args: argparse.Namespace) -> dict:
    kw = dict(size=args.size, batch_size=args.batch_size, device=args.device)
    kw["workers"] = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    folder_loader_rate(args.folder, uint8=True, **kw)  # warm-up: the files into the page cache
    out = {p: folder_loader_rate(args.folder, uint8=p == "uint8", **kw) for p in FOLDER_PATHS}
    return {**out, "workers": kw["workers"]}


def compare_precisions(fp32, bf16) -> dict:
    rel = np.abs(bf16.cui - fp32.cui) / np.abs(fp32.cui)
    with np.errstate(divide="ignore"):
        decades = np.abs(np.log10(bf16.cui) - np.log10(fp32.cui))
    per_image = np.abs(bf16.per_image - fp32.per_image) / np.abs(fp32.per_image).max(
        1, keepdims=True
    )
    return {
        "cui_max_rel_err": float(np.nanmax(rel)),
        "cui_median_rel_err": float(np.nanmedian(rel)),
        "cui_max_abs_log10_diff": float(np.nanmax(decades)),
        "per_image_median_rel_err": float(np.median(per_image)),
        "best_fp32": fp32.best,
        "best_bf16": bf16.best,
        "best_changed": fp32.best != bf16.best,
        "candidates_changed": fp32.candidates != bf16.candidates,
        "predictions_agree": float((fp32.predictions == bf16.predictions).mean()),
    }


def cuda_matches_cpu(args: argparse.Namespace) -> dict:
    """The same small analysis on ``--device`` and on the CPU."""
    model = build_model("resnet18")
    data = SyntheticImages(min(256, args.images), (3, 64, 64))
    kw = {"batch_size": 64, "predictors": CUI_ALONE}
    here = analyze(model, data, device=args.device, workers=args.workers, **kw)
    cpu = analyze(model, data, device="cpu", workers=0, **kw)
    curve = float(np.max(np.abs(here.cui - cpu.cui) / np.abs(cpu.cui)))
    rows = float(np.max(np.abs(here.per_image - cpu.per_image)) / np.abs(cpu.per_image).max())
    return {
        "curve_max_rel_diff": curve,
        "per_image_max_diff_over_max": rows,
        "labels_equal": bool(np.array_equal(here.labels, cpu.labels)),
        "predictions_agree": float((here.predictions == cpu.predictions).mean()),
        "best_equal": here.best == cpu.best,
        "ok": curve < 1e-2 and bool(np.array_equal(here.labels, cpu.labels)),
    }


def _shm_free_gb() -> float | None:
    """Free shared memory: loader workers hand their batches over through /dev/shm."""
    try:
        return round(shutil.disk_usage("/dev/shm").free / 2**30, 1)
    except OSError:
        return None


def gpu(args: argparse.Namespace, report: Report) -> None:
    device = torch.device(args.device)
    doc = report.doc["gpu"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "shm_free_gb": _shm_free_gb(),
        "batch_size": args.batch_size,
        "image_size": args.size,
        "images": args.images,
        "analyze_images": args.analyze_images,
        "workers": args.workers,
        "repeats": args.repeats,
        "targets": TARGETS,
        "models": {},
    }
    doc["cuda_matches_cpu"] = report.attempt("cuda_matches_cpu", lambda: cuda_matches_cpu(args))
    doc["loader_images_per_s"] = report.attempt("loader", lambda: loader_rate(args))
    report.save()
    args.folder = report.attempt(
        "folder", lambda: make_jpeg_folder(Path(args.tmp) / "jpeg", args.folder_images)
    )
    if args.folder is not None:
        doc["folder_loader"] = report.attempt("folder_loader", lambda: folder_loader(args))
    report.save()
    for name in args.models:
        entry = doc["models"][name] = {}
        model = report.attempt(f"{name}.build", lambda n=name: build_model(n))
        if model is None:
            continue
        results = {}
        for precision in args.precisions:
            entry[precision], results[precision] = bench_precision(
                name, model, precision, args, report
            )
            bare_ips = entry[precision].get("bare_images_per_s")
            if args.folder is not None and bare_ips:
                entry[precision]["folder"] = report.attempt(
                    f"{name}.{precision}.folder",
                    lambda n=name, p=precision, b=bare_ips: bench_folder(n, p, args, b),
                )
                report.save()
        if results.get("fp32") is not None and results.get("bf16") is not None:
            entry["bf16_vs_fp32"] = report.attempt(
                f"{name}.bf16_vs_fp32",
                lambda r=results: compare_precisions(r["fp32"], r["bf16"]),
            )
            report.save()
    ratios = [
        p.get("steady_ratio_to_bare")
        for m in doc["models"].values()
        for p in m.values()
        if isinstance(p, dict) and "steady_ratio_to_bare" in p
    ]
    doc["steady_target_met"] = bool(ratios) and all(r >= TARGETS["ratio_to_bare"] for r in ratios)
    doc["summary"] = summary(doc)


def summary(doc: dict) -> dict[str, str]:
    """One line per model and precision (and per bf16 comparison), for a README table."""

    def num(v, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = {}
    for name, entry in doc["models"].items():
        for precision, p in entry.items():
            if precision == "bf16_vs_fp32" and p:
                lines[f"{name} bf16 vs fp32"] = (
                    f"CUI relative error median {num(p['cui_median_rel_err'], '.2%')}, max "
                    f"{num(p['cui_max_rel_err'], '.2%')} ({num(p['cui_max_abs_log10_diff'], '.3f')}"
                    f" decades); best split {'changed' if p['best_changed'] else 'unchanged'}"
                )
            elif isinstance(p, dict) and precision != "bf16_vs_fp32":
                lines[f"{name} {precision}"] = (
                    f"bare {num(p.get('bare_images_per_s'), '.0f')} img/s; engine "
                    f"{num(p.get('engine_ratio_to_bare'), '.2f')}x; analyze steady "
                    f"{num(p.get('steady_ratio_to_bare'), '.2f')}x, end to end "
                    f"{num(p.get('analyze_ratio_to_bare'), '.2f')}x over "
                    f"{p.get('analyze_images')} images (setup "
                    f"{num(p.get('setup_seconds'), '.2f')} s)"
                )
                f = p.get("folder") or {}
                if f:
                    lines[f"{name} {precision} JPEG folder, command line"] = (
                        f"loop {num(f.get('loop_ratio_to_bare'), '.2f')}x, end to end "
                        f"{num(f.get('end_to_end_ratio_to_bare'), '.2f')}x over "
                        f"{f.get('images')} images (setup {num(f.get('setup_seconds'), '.2f')} s)"
                    )
    return lines


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--gpu", action="store_true", help="the GPU measurements instead of the CPU ones"
    )
    p.add_argument("--device", default="cuda", help="device of --gpu (cpu: to try the script)")
    p.add_argument(
        "--parts",
        nargs="+",
        choices=["scaling", "memory"],
        default=["scaling", "memory"],
        help="without --gpu: which measurements (default both)",
    )
    p.add_argument("--models", nargs="+", default=["resnet50", "vgg16"], help="--gpu models")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="--gpu precisions")
    p.add_argument("--size", type=int, default=224, help="--gpu input side in pixels (224)")
    p.add_argument(
        "--images", type=int, default=None, help="images per timed run (4000 CPU, 4096 GPU)"
    )
    p.add_argument(
        "--analyze-images",
        type=int,
        default=None,
        help="--gpu: images per timed analyze() run (default 4 x --images)",
    )
    p.add_argument(
        "--folder-images", type=int, default=8192, help="--gpu: JPEG files of the folder case"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="--gpu timed runs of bare and engine")
    p.add_argument(
        "--workers", type=int, default=None, help="--gpu loader workers (default: isplit's)"
    )
    p.add_argument("--memory-images", type=int, default=2000, help="the smaller memory run")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads per process")
    p.add_argument("--budget-s", type=float, default=240.0, help="skip what starts after this")
    p.add_argument("--json-out", default=None, help="also write the report here, as it grows")
    p.add_argument("--worker", choices=["throughput", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images is None:
        args.images = 4096 if args.gpu else 4000
    if args.analyze_images is None:
        args.analyze_images = 4 * args.images
    counts = (args.images, args.analyze_images, args.batch_size, args.repeats)
    counts += (args.memory_images, args.threads)
    if min(counts) < 1 or args.size < 1:
        p.error("sizes, counts, repeats and threads must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict | None:
    """Run the benchmark, print one JSON object and return it."""
    args = parse_args(argv)
    if args.worker == "throughput":
        return worker_throughput(args)
    if args.worker == "memory":
        return worker_memory(args)
    report = Report(args.json_out, args.budget_s)
    if args.gpu:
        with tempfile.TemporaryDirectory() as args.tmp:
            gpu(args, report)
    else:
        if "scaling" in args.parts:
            report.doc["cpu_scaling"] = report.attempt("cpu_scaling", lambda: cpu_scaling(args))
            report.save()
        if "memory" in args.parts:
            report.doc["memory"] = report.attempt("memory", lambda: memory(args))
        report.doc["cpu_count"] = os.cpu_count()
    report.doc["torch"] = torch.__version__
    report.save()
    print(json.dumps(report.doc, indent=2))
    return report.doc


if __name__ == "__main__":
    main()
