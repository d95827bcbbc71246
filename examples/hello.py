"""A plain Serve application: one deployment that answers with a greeting."""

from ray import serve
from starlette.requests import Request


@serve.deployment
class Hello:
    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    def reconfigure(self, config: dict) -> None:
        self.greeting = config.get("greeting", self.greeting)

    async def __call__(self, request: Request) -> dict:
        name = request.query_params.get("name", "world")
        return {"message": f"{self.greeting}, {name}"}


def build(args: dict) -> serve.Application:
    return Hello.bind(args.get("greeting", "hello"))


app = Hello.bind()
