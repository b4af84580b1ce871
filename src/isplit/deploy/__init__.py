"""Deployment: export a split network, serve its tail over the Open Inference Protocol, run its
head as a client, and plan the split against a latency budget.

- :mod:`~isplit.deploy.export`: head/tail as ONNX + PyTorch programs, a Triton repository;
- :mod:`~isplit.deploy.export_job`: what ``isplit export`` does, as a library call;
- :mod:`~isplit.deploy.manifest`: ``manifest.json`` and the tensors the served models take;
- :mod:`~isplit.deploy.server`: the tail behind KServe v2 REST endpoints (FastAPI + uvicorn);
- :mod:`~isplit.deploy.client`: the head on the device, the tensor over the protocol;
- :mod:`~isplit.deploy.plan`: end-to-end latency of every point under a link and a budget.

The public names are imported on first use (PEP 562): the tail server imports this package, and
on onnxruntime it runs without torch, whose import alone takes about 500 MB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isplit._lazy import lazy_exports

if TYPE_CHECKING:
    from isplit.deploy.client import Client, Prediction
    from isplit.deploy.export import export_split
    from isplit.deploy.manifest import Manifest
    from isplit.deploy.runtime import load_programs
    from isplit.deploy.server import TailServer, create_app

#: public name -> the module that defines it
_LAZY = {
    "Client": "isplit.deploy.client",
    "Prediction": "isplit.deploy.client",
    "export_split": "isplit.deploy.export",
    "Manifest": "isplit.deploy.manifest",
    "load_programs": "isplit.deploy.runtime",
    "TailServer": "isplit.deploy.server",
    "create_app": "isplit.deploy.server",
}

__all__ = [
    "Client",
    "Manifest",
    "Prediction",
    "TailServer",
    "create_app",
    "export_split",
    "load_programs",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
