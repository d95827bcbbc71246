"""A plain Serve application: one deployment that answers with a greeting.

``args.error_rate`` (0 to 1) makes it answer HTTP 500 to that share of requests: a bad version for the canary
rollout demo and tests."""

import random

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


@serve.deployment
class Hello:
    def __init__(self, greeting: str = "hello", error_rate: float = 0.0) -> None:
        self.greeting = greeting
        self.error_rate = float(error_rate)

    def reconfigure(self, config: dict) -> None:
        self.greeting = config.get("greeting", self.greeting)

    async def __call__(self, request: Request) -> dict | JSONResponse:
        name = request.query_params.get("name", "world")
        if self.error_rate and random.random() < self.error_rate:
            return JSONResponse({"error": f"{self.greeting} failed"}, status_code=500)
        return {"message": f"{self.greeting}, {name}"}


def build(args: dict) -> serve.Application:
    return Hello.bind(args.get("greeting", "hello"), float(args.get("error_rate", 0)))


app = Hello.bind()
