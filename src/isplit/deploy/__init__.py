"""Deployment: export a split network, serve its tail over the Open Inference Protocol, run its
head as a client, and plan the split against a latency budget.

- :mod:`~isplit.deploy.export`: head/tail as ONNX + PyTorch programs, a Triton repository;
- :mod:`~isplit.deploy.manifest`: ``manifest.json`` and the tensors the served models take;
- :mod:`~isplit.deploy.server`: the tail behind KServe v2 REST endpoints (FastAPI + uvicorn);
- :mod:`~isplit.deploy.client`: the head on the device, the tensor over the protocol;
- :mod:`~isplit.deploy.plan`: end-to-end latency of every point under a link and a budget.
"""

from isplit.deploy.client import Client, Prediction
from isplit.deploy.export import export_split
from isplit.deploy.manifest import Manifest
from isplit.deploy.runtime import load_programs

__all__ = [
    "Client",
    "Manifest",
    "Prediction",
    "export_split",
    "load_programs",
    "TailServer",
    "create_app",
]


def __getattr__(name: str):
    # The server needs the optional serving stack (pip install 'isplit[serve]'): import it late.
    if name in ("TailServer", "create_app"):
        from isplit.deploy import server

        return getattr(server, name)
    raise AttributeError(name)
