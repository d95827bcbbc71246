"""An app whose code asks for GPUs its config does not mention: what a shared cluster must count anyway.

``@serve.deployment`` sets three replicas of one GPU each. A Serve config that lists the deployment without
``num_replicas`` or ``ray_actor_options`` (or lists no deployments at all) runs exactly that on Ray 2.60.
"""

from ray import serve


@serve.deployment(num_replicas=3, ray_actor_options={"num_cpus": 0.1, "num_gpus": 1})
class Hog:
    async def __call__(self, request: object) -> str:
        return "three GPUs"


app = Hog.bind()
