"""Validation of application specs: field shapes first, then Ray's own ``ServeApplicationSchema``.

Ray's pydantic models silently drop keys they do not know, so a typo such as ``nm_replicas`` would vanish
and the user would get one replica without a word. Every key is therefore checked against Ray's schema
before Ray validates the values, and errors name the field by its path (``deployments[0].num_replicas``).
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from rest_framework.exceptions import ValidationError

NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ROUTE_RE = re.compile(r"^/[A-Za-z0-9._~\-/]*$")
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
DEPLOYMENT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
MAX_DEPLOYMENTS = 50
MAX_JSON_DEPTH = 20
MAX_JSON_BYTES = 64 * 1024
SPEC_KEYS = ("route_prefix", "import_path", "args", "runtime_env", "deployments")
RUNTIME_ENV_KEYS = {"env_vars", "pip", "uv", "conda", "working_dir", "py_modules", "config", "excludes"}


@lru_cache(maxsize=1)
def _ray_schemas() -> tuple[type, type, type]:
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    return ServeApplicationSchema, DeploymentSchema, ServeDeploySchema


def deployment_fields() -> set[str]:
    return set(_ray_schemas()[1].model_fields)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


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


def _check_deployment(errors: dict, path: str, dep: Any, known: set[str]) -> None:
    if not isinstance(dep, dict):
        errors[path] = ["Must be a JSON object describing one deployment."]
        return
    for key in dep:
        if key not in known:
            errors[f"{path}.{key}"] = [f"Unknown deployment field {key!r}; Ray would silently ignore it."]
    name = dep.get("name")
    if not isinstance(name, str) or not DEPLOYMENT_NAME_RE.match(name):
        errors[f"{path}.name"] = ["Required: letters, digits, '_' or '-', starting with a letter or '_'."]
    if "num_replicas" in dep:
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
            lo, hi = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
            if _is_int(lo) and _is_int(hi) and hi < lo:
                errors[f"{path}.autoscaling_config.max_replicas"] = ["Must be at least min_replicas."]
            if "num_replicas" in dep and dep["num_replicas"] != "auto":
                errors[f"{path}.num_replicas"] = ["Give num_replicas or autoscaling_config, not both."]
    opts = dep.get("ray_actor_options")
    if opts is not None:
        if not isinstance(opts, dict):
            errors[f"{path}.ray_actor_options"] = ["Must be a JSON object."]
        else:
            for key in ("num_cpus", "num_gpus", "memory"):
                if key in opts and not (_is_number(opts[key]) and opts[key] >= 0):
                    errors[f"{path}.ray_actor_options.{key}"] = ["Must be a number, zero or more."]
            resources = opts.get("resources", {})
            if not isinstance(resources, dict) or not all(
                isinstance(k, str) and _is_number(v) and v >= 0 for k, v in resources.items()
            ):
                errors[f"{path}.ray_actor_options.resources"] = ["Must map resource names to numbers, zero or more."]
    if "user_config" in dep and dep["user_config"] is not None:
        _check_json_blob(errors, f"{path}.user_config", dep["user_config"])


def _check_runtime_env(errors: dict, runtime_env: dict) -> None:
    for key in runtime_env:
        if key not in RUNTIME_ENV_KEYS:
            errors[f"runtime_env.{key}"] = [f"Unknown runtime_env field {key!r}."]
    for key in ("working_dir",):
        value = runtime_env.get(key)
        if isinstance(value, str) and (".." in value.split("/") or value.startswith("/")):
            errors[f"runtime_env.{key}"] = ["Must be a remote URI, not a path on the cluster's disk."]
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None and not (
        isinstance(env_vars, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())
    ):
        errors["runtime_env.env_vars"] = ["Must map variable names to string values."]
    modules = runtime_env.get("py_modules")
    if isinstance(modules, list) and any(isinstance(m, str) and (".." in m or m.startswith("/")) for m in modules):
        errors["runtime_env.py_modules"] = ["Must be remote URIs, not paths on the cluster's disk."]


def _pydantic_errors(exc: Exception) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for err in exc.errors():  # type: ignore[attr-defined]
        parts: list[str] = []
        for part in err.get("loc", ()):
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            elif "-" in str(part) or str(part) in ("str", "int", "float", "function-after"):
                continue  # pydantic's union branch names, not fields
            else:
                parts.append(str(part))
        key = ".".join(parts) or "non_field_errors"
        msg = err.get("msg", "invalid")
        if msg not in out.setdefault(key, []):
            out[key].append(msg)
    return out


def normalize_spec(data: dict[str, Any]) -> dict[str, Any]:
    """Check a spec (route_prefix, import_path, args, runtime_env, deployments) and return it cleaned.

    Raises DRF's ValidationError with one entry per offending field path.
    """
    errors: dict[str, list[str]] = {}
    route = data.get("route_prefix")
    if not isinstance(route, str) or not ROUTE_RE.match(route) or len(route) > 100:
        errors["route_prefix"] = ["Required: starts with '/', letters, digits and . _ ~ - / only, at most 100."]
    elif "//" in route or "/../" in f"{route}/" or "/./" in f"{route}/":
        errors["route_prefix"] = ["Must not contain '//', '.' or '..' segments."]
    import_path = data.get("import_path")
    if not isinstance(import_path, str) or len(import_path) > 200 or not IMPORT_PATH_RE.match(import_path):
        errors["import_path"] = ['Required, of the form "package.module:attribute".']
    args = data.get("args") or {}
    _check_json_blob(errors, "args", args)
    runtime_env = data.get("runtime_env") or {}
    _check_json_blob(errors, "runtime_env", runtime_env)
    if "runtime_env" not in errors:
        _check_runtime_env(errors, runtime_env)
    deployments = data.get("deployments") or []
    if not isinstance(deployments, list):
        errors["deployments"] = ["Must be a list of deployments."]
        deployments = []
    elif len(deployments) > MAX_DEPLOYMENTS:
        errors["deployments"] = [f"At most {MAX_DEPLOYMENTS} deployments."]
        deployments = []
    known = deployment_fields()
    names: set[str] = set()
    for i, dep in enumerate(deployments):
        _check_deployment(errors, f"deployments[{i}]", dep, known)
        if isinstance(dep, dict) and isinstance(dep.get("name"), str):
            if dep["name"] in names:
                errors[f"deployments[{i}].name"] = [f"Deployment {dep['name']!r} is listed twice."]
            names.add(dep["name"])
    if errors:
        raise ValidationError(errors)

    spec: dict[str, Any] = {"route_prefix": route, "import_path": import_path, "deployments": deployments}
    if args:
        spec["args"] = args
    if runtime_env:
        spec["runtime_env"] = runtime_env
    app_schema = _ray_schemas()[0]
    try:
        app_schema.model_validate({"name": "check", **spec})
    except Exception as exc:  # pydantic.ValidationError; Ray's schema is the authority on values
        if hasattr(exc, "errors"):
            raise ValidationError(_pydantic_errors(exc)) from exc
        raise ValidationError({"non_field_errors": [str(exc)]}) from exc
    return spec


def to_decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def max_replicas(dep: dict) -> int:
    auto = dep.get("autoscaling_config")
    if isinstance(auto, dict):
        return int(auto.get("max_replicas", 1) or 0)
    n = dep.get("num_replicas", 1)
    return n if _is_int(n) else 1


def resource_per_replica(dep: dict, resource: str) -> Decimal:
    opts = dep.get("ray_actor_options") or {}
    if resource == "GPU":
        return to_decimal(opts.get("num_gpus", 0))
    if resource == "CPU":
        return to_decimal(opts.get("num_cpus", 1))
    return to_decimal((opts.get("resources") or {}).get(resource, 0))


def demand(spec: dict, resource: str) -> Decimal:
    """Max replicas x resource per replica, summed over deployments, as an exact decimal."""
    return sum((max_replicas(d) * resource_per_replica(d, resource) for d in spec.get("deployments", [])), Decimal(0))


def serve_app_config(serve_name: str, spec: dict) -> dict:
    return {"name": serve_name, **{k: spec[k] for k in SPEC_KEYS if k in spec}}


def validate_deploy_config(config: dict) -> None:
    """Validate a whole-cluster config with Ray's ServeDeploySchema and refuse any key Ray would drop."""
    deploy_schema = _ray_schemas()[2]
    parsed = deploy_schema.model_validate(config)
    dumped = parsed.model_dump(exclude_unset=True)
    lost = _dropped_keys(config, dumped, "")
    if lost:
        raise ValueError("Ray would silently drop these keys: " + ", ".join(lost[:10]))


def _dropped_keys(original: Any, dumped: Any, path: str) -> list[str]:
    lost: list[str] = []
    if isinstance(original, dict) and isinstance(dumped, dict):
        for key, value in original.items():
            here = f"{path}.{key}" if path else key
            if key not in dumped:
                lost.append(here)
            elif key not in ("args", "user_config", "runtime_env", "resources", "env_vars"):
                lost.extend(_dropped_keys(value, dumped[key], here))
    elif isinstance(original, list) and isinstance(dumped, list):
        for i, (a, b) in enumerate(zip(original, dumped, strict=False)):
            lost.extend(_dropped_keys(a, b, f"{path}[{i}]"))
    return lost


def check_runtime_env_policy(policy: dict, cluster_name: str, spec: dict) -> None:
    """Enforce a cluster's runtime_env policy; the refusal names the field and what the cluster allows."""
    runtime_env = spec.get("runtime_env") or {}
    if not runtime_env or not policy:
        return
    errors: dict[str, list[str]] = {}
    prefixes = policy.get("allowed_uri_prefixes")
    if prefixes is not None:
        uris: list[tuple[str, str]] = []
        if isinstance(runtime_env.get("working_dir"), str):
            uris.append(("runtime_env.working_dir", runtime_env["working_dir"]))
        for module in runtime_env.get("py_modules") or []:
            if isinstance(module, str):
                uris.append(("runtime_env.py_modules", module))
        for field, uri in uris:
            if not any(uri.startswith(p) for p in prefixes):
                allowed = ", ".join(prefixes) or "nothing"
                errors.setdefault(field, []).append(
                    f"Cluster {cluster_name} allows URIs only from: {allowed} (got {uri!r})."
                )
    for key, flag, label in (
        ("pip", "allow_pip", "pip packages"),
        ("uv", "allow_pip", "uv packages"),
        ("conda", "allow_conda", "conda environments"),
        ("env_vars", "allow_env_vars", "env_vars"),
    ):
        if key in runtime_env and policy.get(flag) is False:
            errors[f"runtime_env.{key}"] = [f"Cluster {cluster_name} does not allow {label} in runtime_env."]
    allowed_pip = policy.get("allowed_pip_packages")
    pip = runtime_env.get("pip")
    if allowed_pip is not None and isinstance(pip, list):
        names = [re.split(r"[<>=!~\[; ]", str(p), maxsplit=1)[0].lower() for p in pip]
        bad = [n for n in names if n not in {a.lower() for a in allowed_pip}]
        if bad:
            allowed = ", ".join(allowed_pip)
            errors["runtime_env.pip"] = [
                f"Cluster {cluster_name} allows only these pip packages: {allowed} (not {', '.join(bad)})."
            ]
    if errors:
        raise ValidationError(errors)
