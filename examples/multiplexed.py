"""A multiplexed application: each request names a model (header ``serve_multiplexed_model_id``).

Models are small real linear models: numpy weight vectors saved to files (``manage.py seed_models``).
The catalog maps model ids to URIs; it arrives in ``user_config`` as ``{"models": {id: uri}}`` so adding a
model needs no code change. Without an entry, ``<model_dir>/<id>.npy`` is tried.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

import numpy as np
from ray import serve
from starlette.requests import Request

DEFAULT_MODEL_DIR = os.environ.get(
    "CONTROLPLANE_MODEL_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "models")
)


def load_weights(uri: str) -> np.ndarray:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"this example loads file:// URIs only, not {parsed.scheme}://")
    return np.load(parsed.path if parsed.scheme else uri)


@serve.deployment
class Mux:
    def __init__(self, model_dir: str = DEFAULT_MODEL_DIR) -> None:
        self.model_dir = model_dir
        self.catalog: dict[str, str] = {}

    def reconfigure(self, config: dict) -> None:
        self.catalog = dict(config.get("models", {}))

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> np.ndarray:
        uri = self.catalog.get(model_id) or os.path.join(self.model_dir, f"{model_id}.npy")
        return load_weights(uri)

    async def __call__(self, request: Request) -> dict:
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            return {"error": "send header serve_multiplexed_model_id"}
        started = time.perf_counter()
        weights = await self.get_model(model_id)
        x = np.arange(weights.shape[0], dtype=float)
        return {"model_id": model_id, "prediction": float(weights @ x), "ms": (time.perf_counter() - started) * 1000}


def build(args: dict) -> serve.Application:
    return Mux.bind(args.get("model_dir", DEFAULT_MODEL_DIR))


app = Mux.bind()
