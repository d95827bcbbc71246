"""A composed application: an ingress calls a preprocessor, then two models, through DeploymentHandles."""

from __future__ import annotations

import asyncio

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request


@serve.deployment
class Preprocess:
    def clean(self, text: str) -> list[str]:
        return [w for w in text.lower().split() if w.isalpha()]


@serve.deployment
class LengthModel:
    def predict(self, words: list[str]) -> float:
        return sum(len(w) for w in words) / max(len(words), 1)


@serve.deployment
class SentimentModel:
    POSITIVE = {"good", "great", "fine", "love", "happy", "fast"}
    NEGATIVE = {"bad", "slow", "sad", "hate", "broken", "late"}

    def predict(self, words: list[str]) -> float:
        score = sum(w in self.POSITIVE for w in words) - sum(w in self.NEGATIVE for w in words)
        return score / max(len(words), 1)


@serve.deployment
class Ingress:
    def __init__(self, pre: DeploymentHandle, length: DeploymentHandle, sentiment: DeploymentHandle) -> None:
        self.pre, self.length, self.sentiment = pre, length, sentiment

    async def __call__(self, request: Request) -> dict:
        text = request.query_params.get("text", "a good day")
        words = await self.pre.clean.remote(text)
        length, sentiment = await asyncio.gather(
            self.length.predict.remote(words), self.sentiment.predict.remote(words)
        )
        return {"words": words, "mean_length": length, "sentiment": sentiment}


app = Ingress.bind(Preprocess.bind(), LengthModel.bind(), SentimentModel.bind())
