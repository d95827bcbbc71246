"""The application form (Django forms): top-level fields plus a formset of deployment rows, turned into a spec for
the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms
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


class JSONObjectField(forms.CharField):
    """A JSON object typed into a text area; empty is None."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> dict | None:
        text = super().to_python(value)
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
        if not isinstance(parsed, dict):
            raise forms.ValidationError("Must be a JSON object, e.g. {}.")
        return parsed


class WholeNumberField(forms.IntegerField):
    default_error_messages = {"invalid": "Must be a whole number."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)


class FiniteNumberField(forms.FloatField):
    default_error_messages = {"invalid": "Must be a number, e.g. 0.5.", "finite": "Must be a finite number."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> float | None:
        text = str(value).strip().lower() if value is not None else ""
        if text in ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"):
            raise forms.ValidationError(self.error_messages["finite"], code="finite")
        return super().to_python(value)


class AppForm(forms.Form):
    """The application's top-level fields; the spec's Ray fields keep Ray's names."""

    team = forms.CharField(required=False)
    cluster = forms.CharField(required=False)
    name = forms.CharField(required=False)
    route_prefix = forms.CharField(required=False)
    import_path = forms.CharField(required=False)
    args = JSONObjectField()
    runtime_env = JSONObjectField()
    logging_config = JSONObjectField()
    autoscaling_policy = JSONObjectField()
    external_scaler_enabled = forms.BooleanField(required=False)
    version = forms.CharField(required=False)


class DeploymentForm(forms.Form):
    """One deployment row. Ray fields the row has no input for go in ``extra`` (a JSON object)."""

    name = forms.CharField(required=False)
    num_replicas = WholeNumberField()
    autoscale = forms.BooleanField(required=False)
    min_replicas = WholeNumberField()
    max_replicas = WholeNumberField()
    num_cpus = FiniteNumberField()
    num_gpus = FiniteNumberField()
    max_ongoing_requests = WholeNumberField()
    user_config = JSONObjectField()
    extra = JSONObjectField()

    def is_blank(self) -> bool:
        return not any(str(self[f].value() or "").strip() for f in ROW_FIELDS if f != "autoscale")

    def row(self) -> dict:
        """The row as typed, to show it again."""
        return {f: (bool(self[f].value()) if f == "autoscale" else self[f].value() or "") for f in ROW_FIELDS}

    def used_errors(self, path: str) -> dict[str, list[str]]:
        """This row's errors under the API's names, for the fields its autoscale choice uses."""
        names = {
            "name": "name",
            "max_ongoing_requests": "max_ongoing_requests",
            "num_cpus": "ray_actor_options.num_cpus",
            "num_gpus": "ray_actor_options.num_gpus",
            "user_config": "user_config",
            "extra": "extra",
        }
        if self.cleaned_data.get("autoscale") or self.data.get(self.add_prefix("autoscale")):
            names |= {
                "min_replicas": "autoscaling_config.min_replicas",
                "max_replicas": "autoscaling_config.max_replicas",
            }
        else:
            names["num_replicas"] = "num_replicas"
        return {f"{path}.{names[f]}": list(errs) for f, errs in self.errors.items() if f in names}

    def deployment(self) -> dict:
        """The deployment this row describes (from its valid fields)."""
        data = self.cleaned_data
        dep: dict[str, Any] = dict(data.get("extra") or {})
        dep["name"] = (data.get("name") or "").strip()
        if data.get("autoscale"):
            auto = dict(dep.get("autoscaling_config") or {})
            for key in ("min_replicas", "max_replicas"):
                if data.get(key) is not None:
                    auto[key] = data[key]
            dep["autoscaling_config"] = auto
        elif data.get("num_replicas") is not None:
            dep["num_replicas"] = data["num_replicas"]
        opts = dict(dep.get("ray_actor_options") or {})
        for key in ("num_cpus", "num_gpus"):
            n = data.get(key)
            if n is not None:
                opts[key] = int(n) if n == int(n) else n
        if opts:
            dep["ray_actor_options"] = opts
        if data.get("max_ongoing_requests") is not None:
            dep["max_ongoing_requests"] = data["max_ongoing_requests"]
        if data.get("user_config") is not None:
            dep["user_config"] = data["user_config"]
        return dep


DeploymentFormSet = forms.formset_factory(DeploymentForm, extra=0, max_num=50, absolute_max=50)


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


def deployment_formset(post: QueryDict) -> Any:
    return DeploymentFormSet(post, prefix="dep")


def spec_from_forms(form: AppForm, formset: Any) -> tuple[dict, dict[str, list[str]]]:
    """The spec the forms describe, with their errors under the API's field names (``deployments[0].num_replicas``)."""
    errors: dict[str, list[str]] = {k: list(v) for k, v in form.errors.items() if k != "__all__"}
    data = form.cleaned_data
    spec: dict[str, Any] = {"import_path": (data.get("import_path") or "").strip()}
    route = (data.get("route_prefix") or "").strip()
    if route:
        spec = {"route_prefix": route, **spec}  # empty: Ray's default, "/"
    for key in ("args", "runtime_env", "logging_config", "autoscaling_policy"):
        if data.get(key):
            spec[key] = data[key]
    if data.get("external_scaler_enabled"):
        spec["external_scaler_enabled"] = True
    if not formset.is_valid() and formset.non_form_errors():
        errors["deployments"] = list(formset.non_form_errors())
    deployments = []
    for row in formset.forms:
        if row.is_blank():
            continue
        errors.update(row.used_errors(f"deployments[{len(deployments)}]"))
        deployments.append(row.deployment())
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


class TeamForm(forms.Form):
    slug = forms.CharField(required=False)
    name = forms.CharField(required=False)


class PeopleForm(forms.Form):
    """What the members page's actions send: a username to add, an address to invite, a role (each action reads
    the fields it needs; the services judge the values and name what is wrong)."""

    username = forms.CharField(required=False)
    email = forms.CharField(required=False)
    role = forms.CharField(required=False)


class JoinRequestForm(forms.Form):
    team = forms.CharField(max_length=30)
    message = forms.CharField(required=False, max_length=1000)


class QuotaRequestForm(forms.Form):
    cluster = forms.IntegerField(required=False, min_value=1, error_messages={"invalid": "Choose a cluster."})
    pool = forms.CharField(required=False)
    gpus = forms.CharField(required=False)  # an exact decimal, judged by the service
    reason = forms.CharField(required=False)


class TokenForm(forms.Form):
    name = forms.CharField(required=False)
    role = forms.CharField(required=False)
    expires = forms.DateField(
        required=False, input_formats=["%Y-%m-%d"], error_messages={"invalid": "Use a date like 2027-01-31."}
    )


class QuotaDecisionForm(forms.Form):
    request = forms.IntegerField(min_value=1)
    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])
    comment = forms.CharField(required=False)


def form_errors(form: forms.Form, rename: dict[str, str] | None = None) -> dict[str, list[str]]:
    """A Django form's errors as {field: [messages]}, under the names the page shows them."""
    rename = rename or {}
    return {rename.get(k, k): list(v) for k, v in form.errors.items()}
