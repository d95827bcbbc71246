"""The application form: top-level fields plus one row per deployment, turned into a spec for the services."""

from __future__ import annotations

import json
from typing import Any

from django.http import QueryDict

ROW_FIELDS = (
    "name",
    "num_replicas",
    "autoscale",
    "min_replicas",
    "max_replicas",
    "num_cpus",
    "num_gpus",
    "max_ongoing_requests",
    "user_config",
    "extra",
)
FORM_KEYS = {"name", "num_replicas", "autoscaling_config", "ray_actor_options", "max_ongoing_requests", "user_config"}
EXTRA_ROWS = 1


def _num(value: str, kind: type, errors: dict, key: str) -> Any:
    value = value.strip()
    if value == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        errors[key] = ["Must be a whole number." if kind is int else "Must be a number, e.g. 0.5."]
        return None
    if kind is float and (number != number or number in (float("inf"), float("-inf"))):
        errors[key] = ["Must be a finite number."]
        return None
    return number


def _json(value: str, errors: dict, key: str) -> Any:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        errors[key] = [f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
        return None
    if not isinstance(parsed, dict):
        errors[key] = ["Must be a JSON object, e.g. {}."]
        return None
    return parsed


def rows_from_spec(spec: dict | None) -> list[dict]:
    rows = []
    for dep in (spec or {}).get("deployments", []):
        auto = dep.get("autoscaling_config") or {}
        opts = dep.get("ray_actor_options") or {}
        extra = {k: v for k, v in dep.items() if k not in FORM_KEYS}
        extra_opts = {k: v for k, v in opts.items() if k not in ("num_cpus", "num_gpus")}
        if extra_opts:
            extra["ray_actor_options"] = extra_opts
        extra_auto = {k: v for k, v in auto.items() if k not in ("min_replicas", "max_replicas")}
        if extra_auto:
            extra["autoscaling_config"] = extra_auto
        rows.append(
            {
                "name": dep.get("name", ""),
                "num_replicas": dep.get("num_replicas", "") if not auto else "",
                "autoscale": bool(auto),
                "min_replicas": auto.get("min_replicas", ""),
                "max_replicas": auto.get("max_replicas", ""),
                "num_cpus": opts.get("num_cpus", ""),
                "num_gpus": opts.get("num_gpus", ""),
                "max_ongoing_requests": dep.get("max_ongoing_requests", ""),
                "user_config": json.dumps(dep["user_config"], indent=1) if dep.get("user_config") is not None else "",
                "extra": json.dumps(extra, indent=1) if extra else "",
            }
        )
    return rows


def rows_from_post(post: QueryDict) -> list[dict]:
    count = int(post.get("dep-count", "0") or 0) if (post.get("dep-count", "0") or "0").isdigit() else 0
    rows = []
    for i in range(min(count, 50)):
        row = {f: post.get(f"dep-{i}-{f}", "") for f in ROW_FIELDS}
        row["autoscale"] = post.get(f"dep-{i}-autoscale") == "on"
        rows.append(row)
    return rows


def spec_from_post(post: QueryDict) -> tuple[dict, dict[str, list[str]]]:
    """Build a spec from the form. Returns it with the form-level parse errors (keys as the API names them)."""
    errors: dict[str, list[str]] = {}
    spec: dict[str, Any] = {
        "route_prefix": post.get("route_prefix", "").strip(),
        "import_path": post.get("import_path", "").strip(),
    }
    if not spec["route_prefix"]:
        del spec["route_prefix"]  # Ray's default, "/"
    for key in ("args", "runtime_env", "logging_config", "autoscaling_policy"):
        value = _json(post.get(key, ""), errors, key)
        if value:
            spec[key] = value
    if post.get("external_scaler_enabled") == "on":
        spec["external_scaler_enabled"] = True
    deployments = []
    for _i, row in enumerate(rows_from_post(post)):
        if not any(str(v).strip() for k, v in row.items() if k != "autoscale"):
            continue  # a blank row
        path = f"deployments[{len(deployments)}]"
        dep: dict[str, Any] = dict(_json(row["extra"], errors, f"{path}.extra") or {})
        dep["name"] = row["name"].strip()
        if row["autoscale"]:
            auto = dict(dep.get("autoscaling_config") or {})
            for key in ("min_replicas", "max_replicas"):
                n = _num(str(row[key]), int, errors, f"{path}.autoscaling_config.{key}")
                if n is not None:
                    auto[key] = n
            dep["autoscaling_config"] = auto
        else:
            n = _num(str(row["num_replicas"]), int, errors, f"{path}.num_replicas")
            if n is not None:
                dep["num_replicas"] = n
        opts = dict(dep.get("ray_actor_options") or {})
        for key in ("num_cpus", "num_gpus"):
            n = _num(str(row[key]), float, errors, f"{path}.ray_actor_options.{key}")
            if n is not None:
                opts[key] = int(n) if n == int(n) else n
        if opts:
            dep["ray_actor_options"] = opts
        n = _num(str(row["max_ongoing_requests"]), int, errors, f"{path}.max_ongoing_requests")
        if n is not None:
            dep["max_ongoing_requests"] = n
        user_config = _json(row["user_config"], errors, f"{path}.user_config")
        if user_config is not None:
            dep["user_config"] = user_config
        deployments.append(dep)
    spec["deployments"] = deployments
    if not deployments:
        errors.setdefault("deployments", ["Add at least one deployment."])
    return spec, errors


def split_errors(errors: dict[str, Any]) -> tuple[dict[str, list[str]], dict[int, dict[str, list[str]]], list[str]]:
    """Sort API-style error keys into top-level fields, deployment rows and the rest."""
    fields: dict[str, list[str]] = {}
    rows: dict[int, dict[str, list[str]]] = {}
    other: list[str] = []
    row_keys = {
        "autoscaling_config.min_replicas": "min_replicas",
        "autoscaling_config.max_replicas": "max_replicas",
        "ray_actor_options.num_cpus": "num_cpus",
        "ray_actor_options.num_gpus": "num_gpus",
    }
    for key, messages in errors.items():
        if key == "quota_detail":
            continue
        msgs = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
        if key.startswith("deployments[") and "]." in key:
            index = int(key[len("deployments[") : key.index("]")])
            sub = key[key.index("].") + 2 :]
            field = row_keys.get(sub, sub if sub in ROW_FIELDS else "extra")
            if field == "extra" and sub != "extra":
                msgs = [f"{sub}: {m}" for m in msgs]
            rows.setdefault(index, {}).setdefault(field, []).extend(msgs)
        elif key in (
            "team",
            "cluster",
            "name",
            "route_prefix",
            "import_path",
            "args",
            "runtime_env",
            "logging_config",
            "autoscaling_policy",
            "external_scaler_enabled",
            "deployments",
            "version",
        ) or key.split(".")[0] in ("runtime_env", "logging_config", "autoscaling_policy", "args"):
            fields.setdefault(key, []).extend(msgs)
        else:
            other.extend(msgs if key in ("quota", "non_field_errors", "detail") else [f"{key}: {m}" for m in msgs])
    return fields, rows, other
