from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from apps.core.errors import error_detail
from apps.servespec.demand import demand
from apps.servespec.spec import normalize_spec, validate_deploy_config

BASE = {"route_prefix": "/a/b", "import_path": "examples.hello:app"}


def errors_of(spec: dict) -> dict:
    with pytest.raises(ValidationError) as exc:
        normalize_spec(spec)
    return error_detail(exc.value)


def test_typo_in_deployment_key_is_refused_not_dropped():
    errors = errors_of({**BASE, "deployments": [{"name": "Hello", "nm_replicas": 2}]})
    assert "deployments[0].nm_replicas" in errors
    assert "silently" in str(errors["deployments[0].nm_replicas"][0])


@pytest.mark.parametrize("value", [-1, 0, 1.5, "two", True, 10**6])
def test_bad_replica_counts_name_the_field(value):
    errors = errors_of({**BASE, "deployments": [{"name": "Hello", "num_replicas": value}]})
    assert list(errors) == ["deployments[0].num_replicas"]


def test_ray_schema_errors_are_mapped_to_field_paths():
    errors = errors_of({**BASE, "deployments": [{"name": "Hello", "graceful_shutdown_timeout_s": "soon"}]})
    assert "deployments[0].graceful_shutdown_timeout_s" in errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("route_prefix", "no-slash"),
        ("route_prefix", "/a/../b"),
        ("route_prefix", "/ünïcode"),
        ("import_path", "../../etc/passwd:x"),
        ("import_path", "os.system('x')"),
        ("args", [1, 2]),
    ],
)
def test_top_level_fields_are_checked(field, value):
    errors = errors_of({**BASE, "deployments": [{"name": "Hello"}], field: value})
    assert field in errors


def test_deeply_nested_args_are_refused_without_recursion():
    nested: dict = {}
    cur = nested
    for _ in range(5000):
        cur["x"] = {}
        cur = cur["x"]
    errors = errors_of({**BASE, "deployments": [{"name": "Hello"}], "args": nested})
    assert "args" in errors


def test_runtime_env_paths_on_the_cluster_disk_are_refused():
    errors = errors_of({**BASE, "deployments": [{"name": "Hello"}], "runtime_env": {"working_dir": "../../secret"}})
    assert "runtime_env.working_dir" in errors


def test_duplicate_deployment_names():
    errors = errors_of({**BASE, "deployments": [{"name": "A"}, {"name": "A"}]})
    assert "deployments[1].name" in errors


def test_fractional_demand_is_exact():
    spec = normalize_spec(
        {
            **BASE,
            "deployments": [
                {"name": "A", "num_replicas": 1, "ray_actor_options": {"num_gpus": 0.25}},
                {"name": "B", "num_replicas": 1, "ray_actor_options": {"num_gpus": 0.25}},
                {
                    "name": "C",
                    "autoscaling_config": {"min_replicas": 0, "max_replicas": 1},
                    "ray_actor_options": {"num_gpus": 0.5},
                },
            ],
        }
    )
    assert demand(spec, "GPU") == Decimal("1")
    spec3 = normalize_spec(
        {**BASE, "deployments": [{"name": "A", "num_replicas": 3, "ray_actor_options": {"num_gpus": 0.1}}]}
    )
    assert demand(spec3, "GPU") == Decimal("0.3")


def test_autoscaling_max_counts_for_demand():
    spec = normalize_spec(
        {
            **BASE,
            "deployments": [
                {
                    "name": "A",
                    "autoscaling_config": {"min_replicas": 1, "max_replicas": 6},
                    "ray_actor_options": {"num_gpus": 0.5},
                }
            ],
        }
    )
    assert demand(spec, "GPU") == Decimal("3")


def test_merged_config_validation_catches_dropped_keys():
    ok = {"applications": [{"name": "a--b", "route_prefix": "/a", "import_path": "examples.hello:app"}]}
    validate_deploy_config(ok)
    bad = {"applications": [{"name": "a--b", "route_prefix": "/a", "import_path": "examples.hello:app", "bogus": 1}]}
    with pytest.raises(ValueError, match="bogus"):
        validate_deploy_config(bad)


# ---- quota at the most replicas Ray may run -----------------------------------------------------------------


def _gpu_demand(dep: dict) -> Decimal:
    return demand(normalize_spec({**BASE, "deployments": [{"name": "A", **dep}]}), "GPU")


def test_num_replicas_auto_is_admitted_at_rays_default_maximum():
    """``num_replicas: "auto"`` takes ``AutoscalingConfig.default()`` (ray/serve/_private/config.py,
    ``handle_num_replicas_auto``): read from Ray's code, not copied, so a new Ray default moves the quota with it."""
    from ray.serve.config import AutoscalingConfig

    ray_max = AutoscalingConfig.default().max_replicas
    assert ray_max == 100  # Ray 2.60's default (ray/serve/config.py, AutoscalingConfig.default)
    assert _gpu_demand({"num_replicas": "auto", "ray_actor_options": {"num_gpus": 0.5}}) == Decimal(ray_max) / 2


def test_auto_with_an_autoscaling_config_takes_its_max_and_rays_defaults_for_the_rest():
    auto = {"num_replicas": "auto", "ray_actor_options": {"num_gpus": 1}}
    assert _gpu_demand({**auto, "autoscaling_config": {"max_replicas": 7}}) == 7
    # Only min_replicas given: max stays at the "auto" default of 100, not AutoscalingConfig's field default 1.
    assert _gpu_demand({**auto, "autoscaling_config": {"min_replicas": 2}}) == 100


def test_autoscaling_config_without_max_replicas_uses_the_field_default():
    """Without "auto", an autoscaling_config is an ``AutoscalingConfig`` whose ``max_replicas`` defaults to 1."""
    from ray.serve.config import AutoscalingConfig

    field_default = AutoscalingConfig.model_fields["max_replicas"].default
    assert field_default == 1
    assert _gpu_demand({"autoscaling_config": {"min_replicas": 0}, "ray_actor_options": {"num_gpus": 2}}) == 2


def test_placement_group_bundles_count_every_bundle():
    spec = {"num_replicas": 2, "placement_group_bundles": [{"GPU": 1, "CPU": 1}, {"GPU": 1}]}
    assert _gpu_demand(spec) == 4


def test_integer_resources_are_numbers_like_floats():
    assert _gpu_demand({"num_replicas": 3, "ray_actor_options": {"num_gpus": 1}}) == 3
    assert _gpu_demand({"num_replicas": 3, "ray_actor_options": {"num_gpus": 0}}) == 0


# ---- every field Ray accepts ---------------------------------------------------------------------------------


def test_spec_keys_are_every_field_of_rays_application_schema():
    from apps.servespec.ray_schema import app_fields
    from apps.servespec.spec import RUNTIME_ENV_KEYS, SPEC_KEYS

    assert set(SPEC_KEYS) == set(app_fields())
    from ray.runtime_env import RuntimeEnv

    assert set(RuntimeEnv.known_fields) == RUNTIME_ENV_KEYS


def test_application_level_fields_are_kept():
    spec = normalize_spec(
        {
            **BASE,
            "logging_config": {"log_level": "DEBUG", "encoding": "JSON"},
            "autoscaling_policy": {"policy_function": "team.policies:coordinated"},
            "external_scaler_enabled": False,
            "deployments": [
                {
                    "name": "A",
                    "health_check_period_s": 3,
                    "graceful_shutdown_timeout_s": 5,
                    "max_queued_requests": 10,
                    "logging_config": {"enable_access_log": False},
                }
            ],
        }
    )
    assert spec["logging_config"]["log_level"] == "DEBUG"
    assert spec["autoscaling_policy"]["policy_function"] == "team.policies:coordinated"
    assert spec["deployments"][0]["max_queued_requests"] == 10


def test_nested_unknown_and_renamed_keys():
    warnings: list[str] = []
    spec = normalize_spec(
        {
            **BASE,
            "deployments": [
                {
                    "name": "A",
                    "max_concurrent_queries": 4,
                    "autoscaling_config": {"target_num_ongoing_requests_per_replica": 1, "max_replicas": 3},
                }
            ],
        },
        warnings=warnings,
    )
    dep = spec["deployments"][0]
    assert dep["max_ongoing_requests"] == 4 and dep["autoscaling_config"]["target_ongoing_requests"] == 1
    assert len(warnings) == 2
    errors = errors_of({**BASE, "deployments": [{"name": "A", "logging_config": {"log_levl": "INFO"}}]})
    assert "deployments[0].logging_config.log_levl" in errors
    both = errors_of({**BASE, "deployments": [{"name": "A", "max_concurrent_queries": 1, "max_ongoing_requests": 2}]})
    assert "give only" in both["deployments[0].max_concurrent_queries"][0]


def test_route_prefix_default_null_and_rays_own_rules():
    from apps.servespec.spec import effective_route

    assert effective_route(normalize_spec({"import_path": "a.b:c"})) == "/"
    assert effective_route(normalize_spec({"import_path": "a.b:c", "route_prefix": None})) is None
    assert "route_prefix" in errors_of({"import_path": "a.b:c", "route_prefix": "/trailing/"})


def test_deployment_runtime_envs_obey_the_cluster_policy():
    from apps.servespec.spec import check_runtime_env_policy

    spec = normalize_spec(
        {
            **BASE,
            "deployments": [{"name": "A", "ray_actor_options": {"runtime_env": {"pip": ["torch"]}}}],
        }
    )
    with pytest.raises(ValidationError) as exc:
        check_runtime_env_policy({"allow_pip": False}, "prod", spec)
    assert "deployments[0].ray_actor_options.runtime_env.pip" in error_detail(exc.value)


# ---- meaning, not text -----------------------------------------------------------------------------------------


def test_configs_are_compared_by_meaning():
    from apps.servespec.ray_schema import diff_app, same_app

    desired = {
        "route_prefix": "/a",
        "import_path": "examples.hello:app",
        "args": {},
        "runtime_env": {},
        "deployments": [
            {"name": "B", "num_replicas": 1},
            {"name": "A", "num_replicas": 2, "ray_actor_options": {"num_cpus": 1, "num_gpus": 0}},
        ],
    }
    # What Ray 2.60 echoes in deployed_app_config: floats, its own key order, empty defaults left out.
    echoed = {
        "name": "t--x",
        "route_prefix": "/a",
        "import_path": "examples.hello:app",
        "deployments": [
            {"name": "A", "num_replicas": 2, "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0}},
            {"name": "B", "num_replicas": 1},
        ],
    }
    assert same_app(desired, echoed) and diff_app(desired, echoed) == []
    changed = {**echoed, "deployments": [{"name": "A", "num_replicas": 3}, {"name": "B", "num_replicas": 1}]}
    fields = {d["field"] for d in diff_app(desired, changed)}
    assert fields == {"deployments[A].num_replicas", "deployments[A].ray_actor_options"}
