"""Validation of application specs: field shapes first, then Ray's own ``ServeApplicationSchema``.

A spec is a Ray ``ServeApplicationSchema`` without its name (and without host and port, which are the cluster's):
every field Ray 2.60 accepts can be set. Ray's pydantic models silently drop keys they do not know, so a typo such
as ``nm_replicas`` would vanish and the user would get one replica without a word: every key is checked against
Ray's schema (nested models too), keys Ray renamed are translated with a warning, and errors name the field by its
path (``deployments[0].autoscaling_config.max_replicas``). Nothing here imports user code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

from . import ray_schema

# An app's name in the control plane: what real Serve config files use ("fruit_app", "MyApp", "text-ml", "app1").
NAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.\-]{0,58}[A-Za-z0-9_])?$")
ROUTE_RE = re.compile(r"^/[A-Za-z0-9._~\-/]*$")
DEPLOYMENT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
MAX_DEPLOYMENTS = 50
MAX_JSON_DEPTH = 20
MAX_JSON_BYTES = 64 * 1024
# Every field of Ray 2.60's ServeApplicationSchema but name, host and port (a test checks this against Ray).
SPEC_KEYS = (
    "route_prefix",
    "import_path",
    "runtime_env",
    "deployments",
    "autoscaling_policy",
    "args",
    "logging_config",
    "external_scaler_enabled",
)
# Ray's RuntimeEnv.known_fields (a test checks this against Ray): anything else would be taken for a plugin name.
RUNTIME_ENV_KEYS = {
    "_inject_current_ray",
    "_nsight",
    "_ray_commit",
    "_ray_release",
    "_rocprof_sys",
    "conda",
    "config",
    "container",
    "env_vars",
    "excludes",
    "image_uri",
    "java_jars",
    "pip",
    "py_executable",
    "py_modules",
    "uv",
    "worker_process_setup_hook",
    "working_dir",
}
DEFAULT_ROUTE_PREFIX = "/"  # Ray's default when an app gives none


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def effective_route(spec: dict) -> str | None:
    """The route the app answers on: Ray's default "/" when the spec gives none, None for no HTTP route."""
    return spec.get("route_prefix", DEFAULT_ROUTE_PREFIX)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively so a hostile document cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _check_json_blob(errors: dict, field: str, value: Any) -> None:
    if not isinstance(value, dict):
        errors[field] = ["Must be a JSON object."]
        return
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        errors[field] = [f"Nested more than {MAX_JSON_DEPTH} levels deep."]
        return
    if len(canonical_json(value)) > MAX_JSON_BYTES:
        errors[field] = [f"Larger than {MAX_JSON_BYTES // 1024} KiB."]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e9


def _check_deployment(errors: dict, path: str, dep: dict) -> None:
    """Bounds Ray does not set (a hostile 10**9 replicas) and shapes that must hold before Ray's schema runs."""
    name = dep.get("name")
    if not isinstance(name, str) or not DEPLOYMENT_NAME_RE.match(name):
        errors[f"{path}.name"] = ["Required: letters, digits, '_' or '-', starting with a letter or '_'."]
    if "num_replicas" in dep and dep["num_replicas"] is not None:
        n = dep["num_replicas"]
        if not (_is_int(n) and 1 <= n <= 1000) and n != "auto":
            errors[f"{path}.num_replicas"] = ['Must be a whole number from 1 to 1000 (or "auto").']
    if "max_ongoing_requests" in dep:
        n = dep["max_ongoing_requests"]
        if not (_is_int(n) and 1 <= n <= 100000):
            errors[f"{path}.max_ongoing_requests"] = ["Must be a whole number from 1 to 100000."]
    auto = dep.get("autoscaling_config")
    if auto is not None:
        if not isinstance(auto, dict):
            errors[f"{path}.autoscaling_config"] = ["Must be a JSON object."]
        else:
            for key in ("min_replicas", "max_replicas", "initial_replicas"):
                if key in auto and auto[key] is not None and not (_is_int(auto[key]) and 0 <= auto[key] <= 1000):
                    errors[f"{path}.autoscaling_config.{key}"] = ["Must be a whole number from 0 to 1000."]
    opts = dep.get("ray_actor_options")
    if opts is not None:
        if not isinstance(opts, dict):
            errors[f"{path}.ray_actor_options"] = ["Must be a JSON object."]
        else:
            for key in ("num_cpus", "num_gpus", "memory"):
                if key in opts and opts[key] is not None and not (_is_number(opts[key]) and opts[key] >= 0):
                    errors[f"{path}.ray_actor_options.{key}"] = ["Must be a number, zero or more."]
            resources = opts.get("resources", {})
            if not isinstance(resources, dict) or not all(
                isinstance(k, str) and _is_number(v) and v >= 0 for k, v in resources.items()
            ):
                errors[f"{path}.ray_actor_options.resources"] = ["Must map resource names to numbers, zero or more."]
            if opts.get("runtime_env") is not None:
                _check_json_blob(errors, f"{path}.ray_actor_options.runtime_env", opts["runtime_env"])
                if isinstance(opts["runtime_env"], dict):
                    _check_runtime_env(errors, f"{path}.ray_actor_options.runtime_env", opts["runtime_env"])
    bundles = dep.get("placement_group_bundles")
    if bundles is not None and not (
        isinstance(bundles, list)
        and all(
            isinstance(b, dict) and all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in b.items())
            for b in bundles
        )
    ):
        errors[f"{path}.placement_group_bundles"] = ["Must be a list of {resource: amount} objects."]
    for key in ("user_config",):
        if dep.get(key) is not None:
            _check_json_blob(errors, f"{path}.{key}", dep[key])


def _check_runtime_env(errors: dict, path: str, runtime_env: dict) -> None:
    for key in runtime_env:
        if key not in RUNTIME_ENV_KEYS:
            errors[f"{path}.{key}"] = [f"Unknown runtime_env field {key!r}; Ray would take it for a plugin name."]
    value = runtime_env.get("working_dir")
    if isinstance(value, str) and (".." in value.split("/") or value.startswith("/")):
        errors[f"{path}.working_dir"] = ["Must be a remote URI, not a path on the cluster's disk."]
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None and not (
        isinstance(env_vars, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())
    ):
        errors[f"{path}.env_vars"] = ["Must map variable names to string values."]
    modules = runtime_env.get("py_modules")
    if isinstance(modules, list) and any(isinstance(m, str) and (".." in m or m.startswith("/")) for m in modules):
        errors[f"{path}.py_modules"] = ["Must be remote URIs, not paths on the cluster's disk."]


def _check_route(errors: dict, data: dict) -> None:
    if "route_prefix" not in data:
        return  # Ray's default, "/"
    route = data["route_prefix"]
    if route is None:
        return  # no HTTP route: the app is reached through handles only
    if not isinstance(route, str) or not ROUTE_RE.match(route) or len(route) > 100:
        errors["route_prefix"] = ["Starts with '/', letters, digits and . _ ~ - / only, at most 100 characters."]
    elif "//" in route or "/../" in f"{route}/" or "/./" in f"{route}/":
        errors["route_prefix"] = ["Must not contain '//', '.' or '..' segments."]
    elif route != "/" and route.endswith("/"):
        errors["route_prefix"] = ["Must not end with '/' (unless it is '/'): Ray refuses it."]


def _check_import_path(errors: dict, data: dict) -> None:
    path = data.get("import_path")
    if not isinstance(path, str) or len(path) > 200 or not ray_schema.IMPORT_PATH_RE.match(path) or path.count(":") > 1:
        errors["import_path"] = ['Required, of the form "package.module:app" (or "package.module.app").']


def normalize_spec(data: dict[str, Any], *, warnings: list[str] | None = None) -> dict[str, Any]:
    """Check a spec (every ServeApplicationSchema field but name, host and port) and return it cleaned.

    Keys Ray renamed are translated (and a sentence added to ``warnings``). Raises DRF's ValidationError with one
    entry per offending field path; never imports the user's code.
    """
    warnings = warnings if warnings is not None else []
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["An application spec must be a JSON object."]})
    for key in data:
        if key not in SPEC_KEYS:
            errors[key] = [f"Unknown field {key!r}; Ray would silently ignore it."]
    _check_route(errors, data)
    _check_import_path(errors, data)
    for key in ("args", "runtime_env"):
        if data.get(key):
            _check_json_blob(errors, key, data[key])
        elif data.get(key) not in (None, {}):
            errors[key] = ["Must be a JSON object."]
    if "runtime_env" not in errors and isinstance(data.get("runtime_env"), dict):
        _check_runtime_env(errors, "runtime_env", data["runtime_env"])
    for key in ("logging_config", "autoscaling_policy"):
        if data.get(key) is not None:
            _check_json_blob(errors, key, data[key])
    if "external_scaler_enabled" in data and not isinstance(data["external_scaler_enabled"], bool):
        errors["external_scaler_enabled"] = ["Must be true or false."]
    deployments = data.get("deployments") or []
    if not isinstance(deployments, list):
        errors["deployments"] = ["Must be a list of deployments."]
        deployments = []
    elif len(deployments) > MAX_DEPLOYMENTS:
        errors["deployments"] = [f"At most {MAX_DEPLOYMENTS} deployments."]
        deployments = []
    names: set[str] = set()
    for i, dep in enumerate(deployments):
        if not isinstance(dep, dict):
            errors[f"deployments[{i}]"] = ["Must be a JSON object describing one deployment."]
            continue
        _check_deployment(errors, f"deployments[{i}]", dep)
        if isinstance(dep.get("name"), str):
            if dep["name"] in names:
                errors[f"deployments[{i}].name"] = [f"Deployment {dep['name']!r} is listed twice."]
            names.add(dep["name"])
    if errors:
        raise ValidationError(errors)

    schemas = ray_schema.schemas()
    spec = {k: data[k] for k in SPEC_KEYS if k in data and k not in ("args", "runtime_env")}
    for key in ("args", "runtime_env"):
        if data.get(key):
            spec[key] = data[key]
    spec["deployments"] = list(deployments)
    spec = ray_schema.check_keys(spec, schemas.application, "", errors, warnings)
    if errors:
        raise ValidationError(errors)
    try:
        schemas.application.model_validate(copy.deepcopy({"name": "check", **spec}))  # Ray's validators mutate
    except Exception as exc:  # pydantic.ValidationError or a ValueError: Ray's schema is the authority on values
        raise ValidationError(ray_schema.pydantic_errors(exc)) from exc
    errors = ray_schema.validate_dict_models(spec, schemas.application, "")
    if errors:
        raise ValidationError(errors)
    for path, code in named_code(spec):
        warnings.append(
            f"{path}: {code!r} must be importable where Ray's dashboard runs (its image), not only in the app's "
            "runtime_env: Ray 2.60 imports it when the config arrives and refuses the whole push otherwise."
        )
    return spec


def named_code(spec: dict) -> list[tuple[str, str]]:
    """Custom autoscaling policies and request routers a spec names (Ray's dashboard imports them)."""
    out = []
    policy = (spec.get("autoscaling_policy") or {}).get("policy_function")
    if isinstance(policy, str):
        out.append(("autoscaling_policy.policy_function", policy))
    for i, dep in enumerate(spec.get("deployments") or []):
        auto = (dep or {}).get("autoscaling_config") or {}
        fn = (auto.get("policy") or {}).get("policy_function") if isinstance(auto, dict) else None
        if isinstance(fn, str) and fn != "ray.serve.autoscaling_policy:default_autoscaling_policy":
            out.append((f"deployments[{i}].autoscaling_config.policy.policy_function", fn))
        router = ((dep or {}).get("request_router_config") or {}).get("request_router_class")
        if isinstance(router, str) and not router.startswith("ray.serve."):
            out.append((f"deployments[{i}].request_router_config.request_router_class", router))
    return out


def to_decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def serve_app_config(serve_name: str, spec: dict) -> dict:
    return {"name": serve_name, **{k: spec[k] for k in SPEC_KEYS if k in spec}}


def validate_deploy_config(config: dict) -> None:
    """Validate a whole-cluster config with Ray's ServeDeploySchema and refuse any key Ray would drop."""
    schemas = ray_schema.schemas()
    errors: dict[str, list[str]] = {}
    ray_schema.check_keys(config, schemas.deploy, "", errors, [])
    if errors:
        raise ValueError("Ray would silently drop these keys: " + ", ".join(list(errors)[:10]))
    schemas.deploy.model_validate(copy.deepcopy(config))


def all_runtime_envs(spec: dict) -> list[tuple[str, dict]]:
    """Every runtime_env a spec carries, with its field path: the app's, each deployment's, each deployment actor's,
    and each Serve LLM config's (Ray LLM gives it to the engine's workers)."""
    from .demand import _llm_configs

    out = []
    if isinstance(spec.get("runtime_env"), dict):
        out.append(("runtime_env", spec["runtime_env"]))
    for i, dep in enumerate(spec.get("deployments") or []):
        dep = dep if isinstance(dep, dict) else {}
        env = (
            (dep.get("ray_actor_options") or {}).get("runtime_env")
            if isinstance(dep.get("ray_actor_options"), dict)
            else None
        )
        if isinstance(env, dict) and env:
            out.append((f"deployments[{i}].ray_actor_options.runtime_env", env))
        for j, actor in enumerate(
            dep.get("deployment_actors") or [] if isinstance(dep.get("deployment_actors"), list) else []
        ):
            opts = actor.get("actor_options") if isinstance(actor, dict) else None
            env = opts.get("runtime_env") if isinstance(opts, dict) else None
            if isinstance(env, dict) and env:
                out.append((f"deployments[{i}].deployment_actors[{j}].actor_options.runtime_env", env))
    for path, cfg in _llm_configs(spec.get("args")):
        if isinstance(cfg, dict) and isinstance(cfg.get("runtime_env"), dict) and cfg["runtime_env"]:
            out.append((f"{path}.runtime_env", cfg["runtime_env"]))
    return out


def check_runtime_env_policy(policy: dict, cluster_name: str, spec: dict) -> None:
    """Hold every runtime_env of the spec to the cluster's policy (apps.servespec.runtime_env); an empty policy is
    the default allowlist, not "anything". The refusal names the field and what the cluster allows."""
    from . import runtime_env

    errors: dict[str, list[str]] = {}
    for path, env in all_runtime_envs(spec):
        runtime_env.check(errors, policy or {}, cluster_name, path, env)
    if errors:
        raise ValidationError(errors)
