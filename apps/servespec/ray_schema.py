"""Ray Serve's own schemas: the authority on what a config means, used without ever importing user code.

Three jobs:

- ``schemas()`` loads Ray's pydantic models. Ray's ``AutoscalingPolicy`` and ``RequestRouterConfig`` import and
  cloudpickle the code they name as soon as they are built; the control plane only validates, and that code lives
  on the cluster, so here they check the import path's form instead (done once per process).
- ``check_keys()`` walks a config against the schema and finds every key Ray would silently drop (pydantic ignores
  unknown keys, and fields typed ``Union[Dict, Model]`` keep a dict as it is until the cluster converts it), and
  translates the keys Ray renamed.
- ``canonical_app()`` and ``diff_app()`` compare two app configs by meaning: both go through Ray's schema (so
  ``1`` and ``1.0`` are one value), values equal to Ray's defaults are dropped (so an omitted field and one set to
  its default are the same), and deployments are keyed by name (so order does not matter).
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# "package.module:attr" or "package.module.attr"; module directories may carry hyphens (importlib takes them,
# and KubeRay's samples use "ray-operator.config.samples...").
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*([:.][A-Za-z_][A-Za-z0-9_]*)+$")

# Keys Ray renamed; older configs still carry them and Ray 2.60 drops them without a word.
# (path suffix, old key) -> new key. The suffix names the object the key belongs to.
RENAMED: dict[tuple[str, str], str] = {
    ("deployment", "max_concurrent_queries"): "max_ongoing_requests",
    ("autoscaling_config", "target_num_ongoing_requests_per_replica"): "target_ongoing_requests",
    ("autoscaling_policy", "name"): "policy_function",
}


@dataclass(frozen=True)
class RaySchemas:
    deploy: type
    application: type
    deployment: type
    autoscaling_config: type
    autoscaling_policy: type
    request_router_config: type
    http_options: type


def _check_policy_path(self: Any) -> None:
    path = self.policy_function
    if callable(path):
        path = f"{path.__module__}.{path.__name__}"
    if not isinstance(path, str) or not IMPORT_PATH_RE.match(path):
        raise ValueError(f"policy_function must be an import path such as 'package.module:function', got {path!r}")
    self.policy_function = path


def _check_router_path(self: Any) -> None:
    path = self.request_router_class
    if callable(path):
        path = f"{path.__module__}.{path.__name__}"
    if not isinstance(path, str) or not IMPORT_PATH_RE.match(path):
        raise ValueError(f"request_router_class must be an import path such as 'package.module:Class', got {path!r}")
    self.request_router_class = path


@lru_cache(maxsize=1)
def schemas() -> RaySchemas:
    from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig
    from ray.serve.schema import DeploymentSchema, HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    # Validate the named code's import path; never import it (it is the cluster's code, maybe not installed here).
    AutoscalingPolicy.serialize_policy = _check_policy_path
    RequestRouterConfig._serialize_request_router_cls = _check_router_path
    return RaySchemas(
        deploy=ServeDeploySchema,
        application=ServeApplicationSchema,
        deployment=DeploymentSchema,
        autoscaling_config=AutoscalingConfig,
        autoscaling_policy=AutoscalingPolicy,
        request_router_config=RequestRouterConfig,
        http_options=HTTPOptionsSchema,
    )


def app_fields() -> list[str]:
    """Every field of Ray's application schema that an app may set on a shared cluster (host and port are the
    cluster's, the name is the control plane's)."""
    return [f for f in schemas().application.model_fields if f not in ("name", "host", "port")]


# ---- walking a config against the schema ------------------------------------------------------------------


def _model_in(annotation: Any) -> tuple[type | None, bool]:
    """The pydantic model a field holds (if any), and whether the field is a list of them."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin in (list, typing.List):  # noqa: UP006
        inner, _ = _model_in(typing.get_args(annotation)[0])
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner, many = _model_in(arg)
            if inner is not None:
                return inner, many
    return None, False


def _nested(model: type, key: str) -> tuple[type | None, bool]:
    s = schemas()
    if model is s.application and key == "autoscaling_policy":
        return s.autoscaling_policy, False  # typed as a plain dict, but it is an AutoscalingPolicy
    field = model.model_fields.get(key)
    return _model_in(field.annotation) if field is not None else (None, False)


def _owner(model: type) -> str:
    s = schemas()
    return {
        s.deployment: "deployment",
        s.autoscaling_config: "autoscaling_config",
        s.autoscaling_policy: "autoscaling_policy",
    }.get(model, model.__name__)


def check_keys(value: dict, model: type, path: str, errors: dict, warnings: list[str]) -> dict:
    """Return ``value`` with renamed keys translated; record unknown keys in ``errors`` (by path).

    Only keys that belong to one of Ray's models are checked; free-form fields (args, user_config, runtime_env,
    resources, policy_kwargs, ...) are the user's own.
    """
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    out = dict(value)
    for key in list(value):
        here = f"{path}.{key}" if path else key
        new = RENAMED.get((_owner(model), key))
        if new is not None:
            old_value = out.pop(key)
            if new in value:
                errors[here] = [f"{key!r} is the old name of {new!r}; give only {new!r}."]
            elif old_value is None:
                warnings.append(f"{here}: the old key {key!r} was null and is dropped (Ray's default applies).")
            else:
                out[new] = old_value
                warnings.append(f"{here}: renamed to {new!r} (Ray 2.60 silently ignores {key!r}).")
            continue
        if key not in known:
            errors[here] = [f"Unknown field {key!r}; Ray would silently ignore it."]
            continue
        inner, many = _nested(model, key)
        if inner is None:
            continue
        item = out[key]
        if many and isinstance(item, list):
            out[key] = [
                check_keys(x, inner, f"{here}[{i}]", errors, warnings) if isinstance(x, dict) else x
                for i, x in enumerate(item)
            ]
        elif isinstance(item, dict):
            out[key] = check_keys(item, inner, here, errors, warnings)
    return out


def validate_dict_models(value: dict, model: type, path: str) -> dict[str, list[str]]:
    """Fields typed ``Union[Dict, Model]`` pass Ray's schema as plain dicts and are only converted on the
    cluster, where a bad value fails the deploy. Validate them with their model here, naming the field."""
    errors: dict[str, list[str]] = {}
    for key, item in value.items():
        inner, many = _nested(model, key)
        if inner is None or item is None:
            continue
        here = f"{path}.{key}" if path else key
        items = list(enumerate(item)) if many and isinstance(item, list) else [(None, item)]
        for i, entry in items:
            where = here if i is None else f"{here}[{i}]"
            if not isinstance(entry, dict):
                continue
            if model is schemas().deployment and key == "autoscaling_config" and value.get("num_replicas") == "auto":
                # "auto" starts from AutoscalingConfig.default() and overrides it (handle_num_replicas_auto).
                entry = {**schemas().autoscaling_config.default().model_dump(exclude_unset=True), **entry}
            try:
                inner.model_validate(copy.deepcopy(entry))
            except Exception as exc:  # pydantic's ValidationError, or ValueError from a custom __init__
                for sub, msgs in pydantic_errors(exc).items():
                    errors.setdefault(f"{where}.{sub}" if sub != "non_field_errors" else where, []).extend(msgs)
                continue
            errors.update(validate_dict_models(entry, inner, where))
    return errors


def pydantic_errors(exc: Exception) -> dict[str, list[str]]:
    """A pydantic error as ``{"field.path[0].sub": [message]}``."""
    if not hasattr(exc, "errors"):
        return {"non_field_errors": [str(exc)]}
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        parts: list[str] = []
        for part in err.get("loc", ()):
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            elif "-" in str(part) or "[" in str(part) or str(part) in ("str", "int", "float", "function-after"):
                continue  # pydantic's union branch names, not fields
            else:
                parts.append(str(part))
        key = ".".join(parts) or "non_field_errors"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if msg not in out.setdefault(key, []):
            out[key].append(msg)
    return out


# ---- meaning ----------------------------------------------------------------------------------------------


def _default_of(model: type, key: str) -> tuple[bool, Any]:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    field = model.model_fields.get(key)
    if field is None:
        return False, None
    if field.default_factory is not None:
        try:
            default = field.default_factory()
        except Exception:
            return False, None
    elif field.default is PydanticUndefined:
        return False, None
    else:
        default = field.default
    if type(default).__name__ == "DEFAULT":  # Ray's "not set" sentinel: no value to compare with
        return False, None
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    if hasattr(default, "value") and not isinstance(default, (str, int, float)):
        default = default.value  # enums
    return True, default


def _strip(value: Any, model: type | None) -> Any:
    """Drop values equal to the model's defaults, recursively through Ray's nested models."""
    if model is None or not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        inner, many = _nested(model, key)
        if inner is not None:
            item = [_strip(x, inner) for x in item] if many and isinstance(item, list) else _strip(item, inner)
        has_default, default = _default_of(model, key)
        if has_default and _same(item, _strip(default, inner) if inner is not None else default):
            continue
        out[key] = item
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    return a == b


def canonical_app(config: dict) -> dict:
    """What an app config means to Ray, as a plain dict that compares with ``==``.

    Raises ValueError (or pydantic's ValidationError) when Ray's schema refuses the config. Memoised on the
    config's text: the poller compares the same configs again and again.
    """

    return copy.deepcopy(_canonical_cached(json.dumps(config, sort_keys=True)))


@lru_cache(maxsize=4096)
def _canonical_cached(text: str) -> dict:

    return _canonical(json.loads(text))


def _canonical(config: dict) -> dict:
    s = schemas()
    body = {k: v for k, v in config.items() if k != "name"}
    model = s.application.model_validate(copy.deepcopy({"name": "canonical", **body}))  # Ray's validators mutate
    dumped = model.model_dump(mode="json", exclude_unset=True)
    dumped.pop("name", None)
    out = _strip(dumped, s.application)
    deployments = out.pop("deployments", None) or []
    if deployments:
        out["deployments"] = {d["name"]: _strip(d, s.deployment) for d in deployments}
    return out


def same_app(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return _equal(canonical_app(a), canonical_app(b))
    except Exception:  # one side is not a valid config: it cannot mean the same as the other
        return False


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return _same(a, b)


def diff_app(desired: dict | None, observed: dict | None, limit: int = 50) -> list[dict]:
    """Field-by-field differences in meaning: ``[{"field", "desired", "observed"}]`` (``None`` means absent)."""
    if desired is None or observed is None:
        return []
    try:
        a, b = canonical_app(desired), canonical_app(observed)
    except Exception as exc:
        return [{"field": "(config)", "desired": "valid", "observed": f"not a valid config: {str(exc)[:200]}"}]
    out: list[dict] = []
    _diff(a, b, "", out)
    return out[:limit]


_ABSENT = object()


def _diff(a: Any, b: Any, path: str, out: list[dict]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            here = f"{path}[{key}]" if path == "deployments" else (f"{path}.{key}" if path else str(key))
            _diff(a.get(key, _ABSENT), b.get(key, _ABSENT), here, out)
        return
    if a is _ABSENT or b is _ABSENT or not _equal(a, b):
        out.append({"field": path, "desired": None if a is _ABSENT else a, "observed": None if b is _ABSENT else b})
