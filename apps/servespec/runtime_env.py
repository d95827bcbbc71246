"""A cluster's runtime_env policy, in every form Ray 2.60 accepts.

The policy is an allowlist of runtime_env keys: a key it does not name is refused. What a replica's runtime_env
can do on a shared cluster ranges from setting a variable to running any command as the worker (a
``py_executable`` of ``sh -c ...``, a ``worker_process_setup_hook``), any image or container with any options
(``container.run_options: ["--privileged", "-v", "/:/host"]``), any JVM code (``java_jars``) or any package index
(``pip``/``uv`` options, ``name @ https://...``, conda channels), so:

- by default a cluster allows ``env_vars``, ``working_dir``, ``py_modules``, ``excludes``, ``config``, ``pip`` and
  ``conda``; ``uv``, ``container``, ``image_uri``, ``py_executable``, ``java_jars``, ``worker_process_setup_hook``
  and Ray's underscore keys are off unless staff name them in ``allowed_keys``;
- ``pip`` and ``uv`` are read in each form Ray takes (a list, ``{"packages": [...]}``), and conda's
  ``dependencies`` with their ``{"pip": [...]}`` part; each requirement is parsed with ``packaging``: URLs,
  options and paths are refused, and names are held to ``allowed_pip_packages`` when the policy has one;
- URIs (``working_dir``, ``py_modules``, conda channels) are held to ``allowed_uri_prefixes``;
- a requirements file or environment file named by path is refused: its contents are on the cluster, unseen.

Policy keys: ``allowed_keys`` (list: replaces the default allowlist), ``allowed_uri_prefixes``,
``allowed_pip_packages``, ``allow_pip``, ``allow_conda``, ``allow_env_vars`` (booleans, ``false`` removes the key),
``allow_pip_sources`` (``true``: installer options and ``name @ URL`` requirements are allowed, for clusters whose
staff trust every team with their package sources), ``allowed_model_schemes`` (the model catalog's).
"""

from __future__ import annotations

from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

DEFAULT_KEYS = frozenset({"env_vars", "working_dir", "py_modules", "excludes", "config", "pip", "conda"})
# Off unless staff name them: each runs code, images or packages of the team's choosing around every check here.
OFF_BY_DEFAULT = frozenset(
    {
        "uv",
        "container",
        "image_uri",
        "py_executable",
        "java_jars",
        "worker_process_setup_hook",
        "_inject_current_ray",
        "_nsight",
        "_rocprof_sys",
        "_ray_release",
        "_ray_commit",
    }
)
# Every runtime_env field Ray 2.60 knows is one or the other (a test checks this against Ray's RuntimeEnv).
KNOWN_KEYS = DEFAULT_KEYS | OFF_BY_DEFAULT
POLICY_KEYS = {
    "allowed_keys": list,
    "allowed_uri_prefixes": list,
    "allowed_pip_packages": list,
    "allow_pip": bool,
    "allow_conda": bool,
    "allow_env_vars": bool,
    "allow_pip_sources": bool,
    "allowed_model_schemes": list,
}
WHY = {
    "uv": "uv installs packages from any index with its own options",
    "container": "a container runs with the options it gives (--privileged, host mounts)",
    "image_uri": "an image runs whatever it holds",
    "py_executable": "it is the command every worker runs",
    "java_jars": "JVM code from any URL",
    "worker_process_setup_hook": "it runs in every worker before anything else",
}


def check_policy_document(policy: Any) -> dict[str, list[str]]:
    """Errors in a policy a staff user writes (unknown keys, wrong types), by key."""
    errors: dict[str, list[str]] = {}
    if not isinstance(policy, dict):
        return {"runtime_env_policy": ["Must be a JSON object."]}
    for key, value in policy.items():
        kind = POLICY_KEYS.get(key)
        if kind is None:
            errors[f"runtime_env_policy.{key}"] = [f"Unknown policy key; known: {', '.join(sorted(POLICY_KEYS))}."]
        elif not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            errors[f"runtime_env_policy.{key}"] = ["Must be a list of strings." if kind is list else "true or false."]
    for key in policy.get("allowed_keys") or [] if isinstance(policy.get("allowed_keys"), list) else []:
        if key not in KNOWN_KEYS:
            errors.setdefault("runtime_env_policy.allowed_keys", []).append(f"{key!r} is not a runtime_env field.")
    return errors


def allowed_keys(policy: dict) -> set[str]:
    keys = set(policy["allowed_keys"]) if isinstance(policy.get("allowed_keys"), list) else set(DEFAULT_KEYS)
    for key, flag in (
        ("pip", "allow_pip"),
        ("uv", "allow_pip"),
        ("conda", "allow_conda"),
        ("env_vars", "allow_env_vars"),
    ):
        if policy.get(flag) is False:
            keys.discard(key)
    return keys


def check(errors: dict, policy: dict, cluster_name: str, path: str, runtime_env: dict) -> None:
    """Hold one runtime_env to the cluster's policy; errors by field path, each saying what the cluster allows."""
    allowed = allowed_keys(policy)
    for key in runtime_env:
        if key not in allowed:
            reason = f" ({WHY[key]})" if key in WHY else ""
            errors[f"{path}.{key}"] = [
                f"Cluster {cluster_name} does not allow {key!r} in runtime_env{reason}; it allows: "
                f"{', '.join(sorted(allowed)) or 'nothing'}. A platform admin can allow it for the cluster."
            ]
    prefixes = policy.get("allowed_uri_prefixes")
    uris: list[tuple[str, Any]] = []
    if "working_dir" in runtime_env:
        uris.append((f"{path}.working_dir", runtime_env["working_dir"]))
    for i, module in enumerate(
        runtime_env.get("py_modules") or [] if isinstance(runtime_env.get("py_modules"), list) else []
    ):
        uris.append((f"{path}.py_modules[{i}]", module))
    if prefixes is not None:
        for field, uri in uris:
            if not isinstance(uri, str) or not any(uri.startswith(p) for p in prefixes):
                errors.setdefault(field, []).append(
                    f"Cluster {cluster_name} allows URIs only from: {', '.join(prefixes) or 'nothing'} (got {uri!r})."
                )
    for key in ("pip", "uv"):
        if key in runtime_env and key in allowed:
            _check_packages(errors, policy, cluster_name, f"{path}.{key}", runtime_env[key], key)
    if "conda" in runtime_env and "conda" in allowed:
        _check_conda(errors, policy, cluster_name, f"{path}.conda", runtime_env["conda"])


def _check_packages(errors: dict, policy: dict, cluster_name: str, path: str, value: Any, tool: str) -> None:
    """``pip``/``uv`` as a list of requirements or ``{"packages": [...], ...}``; never a file on the cluster."""
    if isinstance(value, dict):
        extra = set(value) - {"packages", f"{tool}_check", f"{tool}_version", "uv_pip_install_options"}
        if "uv_pip_install_options" in value or extra:
            errors[path] = [
                f"Only 'packages', '{tool}_check' and '{tool}_version' are allowed here (no install options)."
            ]
            return
        if isinstance(value.get(f"{tool}_version"), str) and not _plain_pin(value[f"{tool}_version"]):
            errors[f"{path}.{tool}_version"] = ["Must be a version specifier such as '==24.0'."]
        packages = value.get("packages")
        path = f"{path}.packages"
    else:
        packages = value
    if isinstance(packages, str):
        errors[path] = [
            f"Give the packages as a list: a requirements file on the cluster ({packages!r}) is not seen here."
        ]
        return
    if not isinstance(packages, list):
        errors[path] = ["Must be a list of requirements."]
        return
    _check_requirements(errors, policy, cluster_name, path, packages)


def _plain_pin(version: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(version)
    except InvalidSpecifier:
        return False
    return True


def _check_requirements(errors: dict, policy: dict, cluster_name: str, path: str, packages: list) -> None:
    allowed = policy.get("allowed_pip_packages")
    allowed_names = {canonicalize_name(a) for a in allowed} if isinstance(allowed, list) else None
    for i, item in enumerate(packages):
        field = f"{path}[{i}]"
        text = item.strip() if isinstance(item, str) else None
        if not text:
            errors[field] = ["Must be a requirement such as 'numpy==2.1'."]
            continue
        if policy.get("allow_pip_sources") is True and allowed_names is None:
            continue  # staff trust this cluster's teams with their package sources
        if text.startswith("-"):
            errors[field] = [
                f"Installer options ({text.split()[0]}) are not allowed: they change where packages come from."
            ]
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            errors[field] = [
                f"{text!r} is not a requirement (a name with an optional version): URLs and paths are refused."
            ]
            continue
        if req.url:
            errors[field] = [f"{req.name} @ a URL is not allowed: packages come from the cluster's index only."]
            continue
        if allowed_names is not None and canonicalize_name(req.name) not in allowed_names:
            errors[field] = [
                f"Cluster {cluster_name} allows only these packages: {', '.join(allowed)} (not {req.name})."
            ]


def _check_conda(errors: dict, policy: dict, cluster_name: str, path: str, value: Any) -> None:
    """conda as an environment document: its channels are URIs, its ``{"pip": [...]}`` part is pip."""
    if isinstance(value, str):
        if "/" in value or value.endswith((".yml", ".yaml")):
            errors[path] = ["Give the environment inline: an environment file on the cluster is not seen here."]
        return  # the name of an environment that already exists on the nodes
    if not isinstance(value, dict):
        errors[path] = ["Must be an environment name or an environment document."]
        return
    prefixes = policy.get("allowed_uri_prefixes")
    for i, channel in enumerate(value.get("channels") or []):
        outside = prefixes is not None and not any(str(channel).startswith(p) for p in prefixes)
        if isinstance(channel, str) and "://" in channel and outside:
            errors[f"{path}.channels[{i}]"] = [f"Cluster {cluster_name} allows URIs only from: {', '.join(prefixes)}."]
    for i, dep in enumerate(value.get("dependencies") or []):
        if isinstance(dep, dict):
            for key, packages in dep.items():
                if key != "pip":
                    errors[f"{path}.dependencies[{i}].{key}"] = [
                        "Only a 'pip' list may sit among conda's dependencies."
                    ]
                elif "pip" not in allowed_keys(policy):
                    errors[f"{path}.dependencies[{i}].pip"] = [f"Cluster {cluster_name} does not allow pip packages."]
                elif isinstance(packages, list):
                    _check_requirements(errors, policy, cluster_name, f"{path}.dependencies[{i}].pip", packages)
                else:
                    errors[f"{path}.dependencies[{i}].pip"] = ["Must be a list of requirements."]
        elif isinstance(dep, str) and ("://" in dep or dep.startswith(("-", "/", "."))):
            errors[f"{path}.dependencies[{i}]"] = [
                "URLs, paths and options are not allowed among conda's dependencies."
            ]
