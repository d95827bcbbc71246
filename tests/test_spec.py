from decimal import Decimal

import pytest
from rest_framework.exceptions import ValidationError

from apps.applications.spec import demand, normalize_spec, validate_deploy_config

BASE = {"route_prefix": "/a/b", "import_path": "examples.hello:app"}


def errors_of(spec: dict) -> dict:
    with pytest.raises(ValidationError) as exc:
        normalize_spec(spec)
    return exc.value.detail


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
