"""What an application will make Ray reserve: every replica, bundle, gang, surge and deployment actor, in exact
decimals, read from a spec before it is pushed and from Ray's own report once it runs.

From a spec (admission):

- a deployment's replicas are its most (``num_replicas``, or ``autoscaling_config.max_replicas``, or Ray's
  ``"auto"`` defaults), rounded up to whole gangs (``gang_scheduling_config.gang_size``), plus the surge of a
  rolling update (``max_surge_percent`` of them, rounded up to whole replicas or gangs);
- a replica holds its placement-group bundles when it has them (every bundle), else its ``ray_actor_options``
  (``num_gpus``, ``num_cpus`` (Serve's default is one), ``memory``, ``resources``); CPUs are counted at least at
  the accounting floor, so a thousand ``num_cpus: 0`` replicas are not free;
- deployment-scoped actors (``deployment_actors``) hold their ``actor_options`` once per deployment;
- a Serve LLM app (``ray.serve.llm:build_openai_app`` and its siblings) holds, per replica of each LLM config in
  ``args``, its placement bundles (``placement_group_config``) or one GPU per device (tensor x pipeline parallel
  size, times the data-parallel size), on the pool its ``accelerator_type`` names;
- ``accelerator_type`` and a ``label_selector`` naming a pool put the reservation on that pool.

A deployment the config does not list, and an option the config leaves to the code, cannot be read here (the
code is never imported): ``from_ray`` reads what Ray reports it applied (``DeploymentDetails.deployment_config``
and ``required_resources``), and the push holds an app to what was admitted (apps/deploys/observe.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

CPU_FLOOR = Decimal("0.1")  # what a replica counts for in CPU accounting, whatever num_cpus says
# Resources every cluster has and no pool counts (what a replica can ask for without a pool).
UNPOOLED = {"CPU", "memory", "object_store_memory"}
LLM_BUILDERS = ("ray.serve.llm:build_", "ray.serve.llm.build_")


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        return Decimal(0)
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return d if d.is_finite() and d >= 0 else Decimal(0)


def _int(value: Any, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


@dataclass(frozen=True)
class Reservation:
    """``count`` units (replicas, or one actor) each holding ``per_unit`` of each resource, on ``pool`` when the
    spec names one (``accelerator_type``, a ``label_selector``), else on any pool that counts the resource."""

    path: str
    count: int
    per_unit: dict[str, Decimal] = field(default_factory=dict)
    pool: str | None = None

    def total(self, resource: str) -> Decimal:
        return self.count * self.per_unit.get(resource, Decimal(0))


def _max_replicas(dep: dict) -> int:
    """The most replicas Ray may run for a deployment, read through Ray's own code (``"auto"``: Ray's defaults
    overridden by the fields given; ``autoscaling_config`` alone: an AutoscalingConfig, max 1 by default)."""
    from ray.serve._private.config import handle_num_replicas_auto
    from ray.serve._private.utils import DEFAULT

    from . import ray_schema

    auto = dep.get("autoscaling_config")
    n = dep.get("num_replicas")
    try:
        if n == "auto":
            _, cfg = handle_num_replicas_auto(DEFAULT.VALUE, auto if isinstance(auto, dict) else DEFAULT.VALUE)
            return int(cfg.max_replicas)
        if isinstance(auto, dict):
            return int(ray_schema.schemas().autoscaling_config(**auto).max_replicas)
    except Exception:  # an invalid stored spec: what the numbers say
        return _int(auto.get("max_replicas"), 1) if isinstance(auto, dict) else 1
    return _int(n, 1)


def _with_gangs_and_surge(replicas: int, dep: dict) -> int:
    gangs = dep.get("gang_scheduling_config") if isinstance(dep.get("gang_scheduling_config"), dict) else {}
    gang = _int(gangs.get("gang_size"), 1) or 1
    replicas = math.ceil(replicas / gang) * gang
    surge_pct = _int(dep.get("max_surge_percent"), 0)
    if surge_pct:
        surge = math.ceil(replicas * surge_pct / 100)
        replicas += math.ceil(surge / gang) * gang
    return replicas


def _pool_of(options: dict) -> str | None:
    """The pool a replica is steered to: ``accelerator_type``, or a ``label_selector`` value."""
    accel = options.get("accelerator_type")
    if isinstance(accel, str) and accel:
        return accel
    selector = options.get("label_selector")
    if isinstance(selector, dict):
        for key in ("pool", "ray.io/accelerator-type", "accelerator_type"):
            value = selector.get(key)
            if isinstance(value, str) and value and not value.startswith("!"):
                return value.removeprefix("in(").removesuffix(")").split(",")[0]
    return None


def actor_resources(options: dict, *, cpu_default: Decimal = Decimal(1)) -> dict[str, Decimal]:
    """What one actor with these ``ray_actor_options`` holds."""
    out: dict[str, Decimal] = {}
    cpus = options.get("num_cpus")
    out["CPU"] = max(cpu_default if cpus is None else to_decimal(cpus), CPU_FLOOR)
    if options.get("num_gpus"):
        out["GPU"] = to_decimal(options["num_gpus"])
    if options.get("memory"):
        out["memory"] = to_decimal(options["memory"])
    for name, amount in (options.get("resources") or {}).items() if isinstance(options.get("resources"), dict) else ():
        if isinstance(name, str) and not name.startswith("accelerator_type:"):
            out[name] = out.get(name, Decimal(0)) + to_decimal(amount)
    return out


def _bundles(bundles: Any) -> dict[str, Decimal] | None:
    if not isinstance(bundles, list) or not bundles:
        return None
    out: dict[str, Decimal] = {}
    for bundle in bundles:
        if isinstance(bundle, dict):
            for name, amount in bundle.items():
                if isinstance(name, str) and not name.startswith("accelerator_type:"):
                    out[name] = out.get(name, Decimal(0)) + to_decimal(amount)
    if "CPU" in out:
        out["CPU"] = max(out["CPU"], CPU_FLOOR)
    else:
        out["CPU"] = CPU_FLOOR
    return out


def deployment_reservations(path: str, dep: dict, *, replicas: int | None = None) -> list[Reservation]:
    options = dep.get("ray_actor_options") if isinstance(dep.get("ray_actor_options"), dict) else {}
    per_replica = _bundles(dep.get("placement_group_bundles")) or actor_resources(options)
    count = _with_gangs_and_surge(_max_replicas(dep) if replicas is None else replicas, dep)
    out = [Reservation(path, count, per_replica, _pool_of(options))]
    for i, actor in enumerate(
        dep.get("deployment_actors") or [] if isinstance(dep.get("deployment_actors"), list) else []
    ):
        actor_opts = (actor or {}).get("actor_options") if isinstance(actor, dict) else None
        actor_opts = actor_opts if isinstance(actor_opts, dict) else {}
        out.append(Reservation(f"{path}.deployment_actors[{i}]", 1, actor_resources(actor_opts), _pool_of(actor_opts)))
    return out


def _llm_configs(args: Any, path: str = "args") -> list[tuple[str, Any]]:
    """The LLM configs a Serve LLM builder's args carry (llm_configs[], llm_config, prefill/decode configs)."""
    out: list[tuple[str, Any]] = []
    if not isinstance(args, dict):
        return out
    for key in ("llm_configs",):
        if isinstance(args.get(key), list):
            out += [(f"{path}.{key}[{i}]", c) for i, c in enumerate(args[key])]
    for key in ("llm_config", "prefill_config", "decode_config"):
        if key in args:
            out.append((f"{path}.{key}", args[key]))
    return out


def llm_reservations(spec: dict) -> tuple[list[Reservation], dict[str, list[str]]]:
    """A Serve LLM app's replicas, read from its args as Ray LLM reads them (vllm_models.VLLMEngineConfig)."""
    out: list[Reservation] = []
    errors: dict[str, list[str]] = {}
    import_path = str(spec.get("import_path") or "")
    if not import_path.startswith(LLM_BUILDERS):
        return out, errors
    for path, cfg in _llm_configs(spec.get("args")):
        if not isinstance(cfg, dict):
            errors[path] = [
                "Give the LLM config inline (a file path on the cluster cannot be read, so its GPUs cannot be counted)."
            ]
            continue
        engine = cfg.get("engine_kwargs") if isinstance(cfg.get("engine_kwargs"), dict) else {}
        devices = _int(engine.get("tensor_parallel_size"), 1) * _int(engine.get("pipeline_parallel_size"), 1)
        devices = max(devices, 1)
        pg = cfg.get("placement_group_config") if isinstance(cfg.get("placement_group_config"), dict) else {}
        if isinstance(pg.get("bundle_per_worker"), dict):
            per_replica = _bundles([pg["bundle_per_worker"]] * devices) or {}
        elif isinstance(pg.get("bundles"), list) and pg["bundles"]:
            per_replica = _bundles(pg["bundles"]) or {}
        else:
            per_replica = {"GPU": Decimal(devices), "CPU": CPU_FLOOR}
        dep = cfg.get("deployment_config") if isinstance(cfg.get("deployment_config"), dict) else {}
        replicas = _max_replicas(dep) * max(_int(engine.get("data_parallel_size"), 1), 1)
        accel = cfg.get("accelerator_type") if isinstance(cfg.get("accelerator_type"), str) else None
        out.append(Reservation(path, _with_gangs_and_surge(replicas, dep), per_replica, accel or None))
    return out, errors


def reservations(spec: dict) -> list[Reservation]:
    """Everything the spec makes Ray reserve (see the module's docstring)."""
    out: list[Reservation] = []
    llm, _ = llm_reservations(spec)
    llm_deployments = bool(llm)
    for i, dep in enumerate(spec.get("deployments") or []):
        if not isinstance(dep, dict):
            continue
        if llm_deployments and str(dep.get("name", "")).startswith("LLMServer"):
            continue  # its replicas are counted from the LLM config below
        out += deployment_reservations(f"deployments[{i}]", dep)
    return out + llm


def demand(spec: dict, resource: str, pool: str | None = None) -> Decimal:
    """The spec's total of ``resource`` (on ``pool``: reservations steered elsewhere are not counted there)."""
    return sum(
        (r.total(resource) for r in reservations(spec) if pool is None or r.pool is None or _same(r.pool, pool)),
        Decimal(0),
    )


def replica_count(spec: dict) -> int:
    return sum(r.count for r in reservations(spec) if ".deployment_actors[" not in r.path)


def _same(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def unplaceable(spec: dict, pools: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Asks no pool of the cluster counts, by field path: a resource (a custom name, GPUs where the pools count
    another resource) or a pool name (accelerator_type, label_selector) the cluster does not have.
    ``pools``: (name, resource) of each of the cluster's pools."""
    errors: dict[str, list[str]] = {}
    counted = {resource for _, resource in pools}
    names = [name for name, _ in pools]
    _, llm_errors = llm_reservations(spec)
    errors.update(llm_errors)
    for r in reservations(spec):
        for resource, amount in r.per_unit.items():
            if resource in UNPOOLED or not amount or resource in counted:
                continue
            pooled = ", ".join(sorted(counted)) or "nothing"
            errors.setdefault(r.path, []).append(
                f"Asks for {resource!r}, which no pool of the cluster counts (its pools count: {pooled}); it would "
                "escape the quota."
            )
        if r.pool and any(r.per_unit.get(res) for res in counted) and not any(_same(r.pool, n) for n in names):
            errors.setdefault(r.path, []).append(
                f"Asks for pool {r.pool!r} (accelerator_type or label_selector); the cluster's pools are: "
                f"{', '.join(names) or 'none'}."
            )
    return errors


def from_ray(deployments: dict) -> list[Reservation]:
    """What Ray reports it applied to a running app's deployments: ``deployment_config`` (options from the code,
    the config and Ray's defaults together) and ``required_resources`` per replica."""
    out: list[Reservation] = []
    for name, details in sorted((deployments or {}).items()):
        if not isinstance(details, dict):
            continue
        cfg = details.get("deployment_config") if isinstance(details.get("deployment_config"), dict) else {}
        required = details.get("required_resources") if isinstance(details.get("required_resources"), dict) else {}
        dep = dict(cfg)
        if required and not isinstance(cfg.get("placement_group_bundles"), list):
            opts = dict(cfg.get("ray_actor_options") or {})
            opts["num_cpus"] = required.get("CPU", 0)
            opts["num_gpus"] = required.get("GPU", 0)
            opts["memory"] = required.get("memory", 0)
            opts["resources"] = {
                k: v for k, v in required.items() if k not in ("CPU", "GPU", "memory", "object_store_memory")
            }
            dep["ray_actor_options"] = opts
        out += deployment_reservations(f"deployments.{name}", dep)
    return out
