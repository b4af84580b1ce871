"""Many processes, one analysis: torch.distributed plumbing.

A run on ``K`` processes is started by torchrun (``torchrun --nproc-per-node K -m isplit analyze
...``, or ``isplit analyze --nproc K``, which calls torchrun's launcher for the user). Each process
(rank) takes a contiguous share of the data set (:func:`shard`: every image exactly once, no
padding), computes on its own device (``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo), and the
ranks exchange their results as bytes (:func:`all_gather_bytes`); rank 0 writes the outputs.
Multi-node runs use torchrun's usual rendezvous options (``--nnodes``, ``--rdzv-endpoint``, ...).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from isplit.errors import IsplitError, PeerFailed

log = logging.getLogger("isplit")

T = TypeVar("T")


#: Set by :func:`launch` for its processes: where a rank writes the message of a user mistake,
#: so that the launcher prints it once.
ERROR_FILE_ENV = "ISPLIT_ERROR_FILE"


def launched() -> bool:
    """Whether this process was started by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes outputs and prints."""
    return rank() == 0


def init(device: str | torch.device) -> None:
    """Join the process group torchrun set up: NCCL with one GPU per process (``LOCAL_RANK``)
    on CUDA, gloo on the CPU."""
    from isplit.models import resolve_device

    if dist.is_initialized():
        return
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        local, visible = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= visible:
            raise IsplitError(
                f"process {local} of this node needs GPU {local}, but {visible} GPU(s) are "
                f"visible: start at most {visible} processes per node (--nproc / "
                "--nproc-per-node)"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: on CUDA without an index, the GPU :func:`init` chose."""
    if device.type == "cuda" and device.index is None and active():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shard(n: int, index: int | None = None, count: int | None = None) -> range:
    """Share ``index`` of ``count`` (default: this rank's) of ``n`` items, contiguous: shares
    differ by at most one item, and together they hold every item exactly once (no padding,
    none dropped)."""
    index = rank() if index is None else index
    count = world_size() if count is None else count
    if n < count:
        raise IsplitError(
            f"{n} image(s) cannot be shared among {count} processes; use fewer processes"
        )
    return range(index * n // count, (index + 1) * n // count)


@contextlib.contextmanager
def _peers() -> Iterator[None]:
    """A collective that fails because a peer process died raises :class:`PeerFailed`."""
    try:
        yield
    except RuntimeError as e:  # gloo / NCCL: connection closed, timeout, ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PeerFailed(f"rank {rank()}: another process of the run failed ({first})") from None


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order (each rank gets all of them)."""
    if not active():
        return [data]
    device = _collective_device()
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    with _peers():
        dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    padded = torch.zeros(max(max(lengths), 1), dtype=torch.uint8)
    if data:
        padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    padded = padded.to(device)
    parts = [torch.empty_like(padded) for _ in lengths]
    with _peers():
        dist.all_gather(parts, padded)
    return [bytes(p[:n].cpu().numpy()) for p, n in zip(parts, lengths)]


def all_gather_json(value: object) -> list:
    """Every rank's JSON-able ``value``, in rank order."""
    return [json.loads(b) for b in all_gather_bytes(json.dumps(value).encode())]


def all_gather_arrays(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every rank's named arrays, in rank order (sent as NPZ bytes: no pickling)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = []
    for data in all_gather_bytes(buf.getvalue()):
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            out.append({k: npz[k] for k in npz.files})
    return out


def barrier() -> None:
    if active():
        with _peers():
            dist.barrier()


def agree(step: Callable[[], T]) -> T:
    """Run ``step`` on every process; when it raises an :class:`IsplitError` on any of them,
    raise it on all (every process stops with the same clear message, none waits for the
    failed one)."""
    if not active():
        return step()
    result, message = None, ""
    try:
        result = step()
    except IsplitError as e:
        message = str(e) or "error"
    failed = [m.decode() for m in all_gather_bytes(message.encode()) if m]
    if failed:
        raise IsplitError(failed[0])
    return result


# --------------------------------------------------------------------------------------------
# The launcher behind --nproc
# --------------------------------------------------------------------------------------------


def max_processes(device: torch.device) -> int:
    """How many processes ``--nproc`` may start on this machine: one per GPU on CUDA; on a CPU
    one per core (``os.cpu_count()``): more would only take turns on the same cores."""
    if device.type == "cuda":
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def check_nproc(nproc: int, device: torch.device) -> None:
    if nproc < 1:
        raise IsplitError(f"--nproc must be at least 1, not {nproc}")
    most = max_processes(device)
    if nproc > most:
        what = f"{most} GPU(s)" if device.type == "cuda" else f"{most} CPU core(s)"
        raise IsplitError(
            f"--nproc {nproc} is more processes than this machine has {what}; use --nproc "
            f"{most} or fewer (one process per {'GPU' if device.type == 'cuda' else 'core'})"
        )


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc K`` / ``--nproc=K``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m isplit ARGV`` on ``nproc`` processes through torchrun's launcher
    (``torch.distributed.run --standalone --nproc-per-node NPROC -m isplit ARGV``); the exit
    code: 0, 2 for a user mistake (its message printed once, on one line), else 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    with tempfile.TemporaryDirectory(prefix="isplit-") as tmp:
        errors = Path(tmp) / "error"
        args = parse_args(
            ["--standalone", "--nproc-per-node", str(nproc), "-m", "isplit", *strip_nproc(argv)]
        )
        env = {
            ERROR_FILE_ENV: str(errors),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
        }
        elastic = logging.getLogger("torch.distributed.elastic")
        level = elastic.level
        elastic.setLevel(logging.CRITICAL)  # the ranks report their own failures
        try:
            with _environment(**env):
                run(args)
        except ChildFailedError as e:
            messages = sorted(Path(tmp).glob("error.*"), key=lambda p: int(p.suffix[1:]))
            if messages:
                print(f"isplit: error: {messages[0].read_text().strip()}", file=sys.stderr)
                return 2
            failed = ", ".join(f"rank {r} (exit code {f.exitcode})" for r, f in e.failures.items())
            print(f"isplit: error: the distributed run failed: {failed}", file=sys.stderr)
            return 1
        finally:
            elastic.setLevel(level)
    return 0


#: The commands that run on several processes.
COMMANDS = ("analyze", "validate")


def start(
    nproc: int,
    device: str,
    precision: str,
    argv: Sequence[str],
    run: Callable[[], int],
    check: Callable[[], None] | None = None,
) -> int:
    """``--nproc K``: check what can be checked here (K against this machine's GPUs or cores,
    the precision on ``device``, then ``check``), and start ``python -m isplit ARGV`` on K
    processes through torchrun (:func:`launch`); K = 1 calls ``run`` in this process."""
    from isplit.importance import autocast_dtype
    from isplit.models import resolve_device

    resolved = resolve_device(device)
    check_nproc(nproc, resolved)
    autocast_dtype(precision, resolved)
    if check is not None:
        check()
    if nproc == 1:
        return run()
    return launch(nproc, argv)


def run_rank(command: str, device: str | None, run: Callable[[], int]) -> int:
    """One process of a torchrun launch: join the process group, call ``run``, leave it."""
    if command not in COMMANDS:
        raise IsplitError(
            f"only {' and '.join(COMMANDS)} run on several processes, not {command}; "
            "run it without torchrun"
        )
    init(device)
    try:
        return run()
    finally:
        finish()


def report_error(message: str) -> bool:
    """Under :func:`launch`, hand a user mistake's message to the launcher (which prints it
    once); False when not launched that way (print it yourself)."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or not launched():
        return False
    Path(f"{path}.{os.environ['RANK']}").write_text(message)
    return True
