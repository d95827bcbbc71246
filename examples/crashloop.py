"""An application whose replicas crash a few seconds after every start: used to show crash-loop alerts.

The replica starts and answers, then its process exits; Serve starts a new replica, which crashes the same way.
"""

from __future__ import annotations

import os
import threading

from ray import serve
from starlette.requests import Request


@serve.deployment
class Crashy:
    def __init__(self, after_s: float = 3.0) -> None:
        threading.Timer(after_s, lambda: os._exit(1)).start()

    async def __call__(self, request: Request) -> str:
        return "alive, for now"


app = Crashy.bind()
