"""The compaction planner on its own: validity on random clusters, baseline, determinism, edge cases."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.compaction.planner import naive_plan, net_value, parse, plan, validate

SIZES = [0.25, 0.5, 1.0, 2.0]


@st.composite
def clusters(draw):
    n_nodes = draw(st.integers(min_value=1, max_value=12))
    pools = draw(st.lists(st.sampled_from(["a100", "h100"]), min_size=n_nodes, max_size=n_nodes))
    nodes = [{"id": "head", "head": True, "pool": "a100", "resources": {"CPU": 4, "GPU": 0}}]
    for i, pool in enumerate(pools):
        gpus = draw(st.sampled_from([1, 2, 4, 8]))
        nodes.append(
            {
                "id": f"n{i}",
                "pool": pool,
                "labels": {"pool": pool},
                "resources": {"GPU": gpus, "CPU": 8},
                "cost": draw(st.sampled_from([1, 1, 2])),
            }
        )
    free = {n["id"]: dict(n["resources"]) for n in nodes}
    replicas = []
    for j in range(draw(st.integers(min_value=0, max_value=40))):
        node = draw(st.sampled_from(nodes))
        gpu = draw(st.sampled_from(SIZES + [0.0]))
        cpu = draw(st.sampled_from([0.1, 0.5, 1.0]))
        if free[node["id"]].get("GPU", 0) >= gpu and free[node["id"]]["CPU"] >= cpu:
            free[node["id"]]["GPU"] = free[node["id"]].get("GPU", 0) - gpu
            free[node["id"]]["CPU"] -= cpu
            rep = {
                "id": f"r{j}",
                "node": node["id"],
                "app": f"a{j % 4}",
                "deployment": "d",
                "team": "t",
                "resources": {"GPU": gpu, "CPU": cpu},
            }
            if draw(st.booleans()) and node["id"] != "head":
                rep["label_selector"] = {"pool": node["pool"]}
            replicas.append(rep)
    return {"nodes": nodes, "replicas": replicas}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_every_plan_is_valid_deterministic_and_no_worse_than_first_fit(state):
    result = plan(state)
    assert validate(state, result) == []
    assert plan(json.loads(json.dumps(state))) == result
    nodes, replicas = parse(state)
    baseline = naive_plan(nodes, replicas)
    assert net_value(nodes, replicas, result["nodes_to_drain"], result["moves"]) >= net_value(
        nodes, replicas, baseline.nodes_to_drain, baseline.moves
    )
    assert "head" not in result["nodes_to_drain"]
    moved_from = {m["from"] for m in result["moves"]}
    assert moved_from <= set(result["nodes_to_drain"])


def node(id, gpus=4, pool="a100", head=False, cost=1):  # noqa: A002
    return {"id": id, "head": head, "pool": pool, "resources": {"GPU": gpus, "CPU": 8}, "cost": cost}


def rep(id, on, gpus, app="a", dep="d", **extra):  # noqa: A002
    return {
        "id": id,
        "node": on,
        "app": app,
        "deployment": dep,
        "team": "t",
        "resources": {"GPU": gpus, "CPU": 0.1},
        **extra,
    }


def test_an_empty_node_is_not_filled_to_free_others():
    """Measured on real Ray with pack scheduling: one node held 3 GPUs, another 0.5, the third was empty. Moving
    everything onto the empty node 'drains' two nodes in six moves and frees nothing more than one move does."""
    state = {
        "nodes": [node("head", 0, head=True), node("a"), node("b"), node("c")],
        "replicas": [rep(f"a{i}", "a", 0.5 if i < 4 else 1.0, app=f"x{i}") for i in range(5)]
        + [rep("b0", "b", 0.5, app="y")],
    }
    result = plan(state)
    assert result["nodes_to_drain"] == ["b"] and result["moves"] == [{"replica": "b0", "from": "b", "to": "a"}]
    assert result["idle_nodes"] == ["c"]


def test_filling_an_empty_node_is_kept_when_it_frees_more():
    """Three full-ish 4-GPU nodes (3 GPUs each) cannot help each other; an empty 8-GPU node takes two of them:
    two nodes drained, one filled, one freed in all, which beats freeing none."""
    state = {
        "nodes": [node("head", 0, head=True), node("a"), node("b"), node("c"), node("d", gpus=8)],
        "replicas": [rep(f"{n}{i}", n, 1.0, app=f"{n}{i}") for n in "abc" for i in range(3)],
    }
    result = plan(state)
    assert len(result["nodes_to_drain"]) == 2 and validate(state, result) == []
    assert "d" in {m["to"] for m in result["moves"]}
    nodes, replicas = parse(state)
    assert net_value(nodes, replicas, result["nodes_to_drain"], result["moves"]) == 1


def test_nothing_to_free_when_every_node_is_full():
    state = {"nodes": [node("h", 0, head=True), node("a"), node("b")], "replicas": [rep("1", "a", 4), rep("2", "b", 4)]}
    result = plan(state)
    assert result["nodes_to_drain"] == [] and result["moves"] == []


def test_head_only_cluster():
    state = {"nodes": [node("h", 4, head=True)], "replicas": [rep("1", "h", 1)]}
    assert plan(state)["nodes_to_drain"] == []


def test_the_head_is_never_drained_even_when_it_could_be():
    state = {"nodes": [node("h", 4, head=True), node("a")], "replicas": [rep("1", "h", 0.5)]}
    assert plan(state)["nodes_to_drain"] == []


def test_fractional_gpus_pack_exactly():
    state = {
        "nodes": [node("h", 0, head=True), node("a", 1), node("b", 1), node("c", 1)],
        "replicas": [rep("1", "a", 0.25), rep("2", "b", 0.25), rep("3", "c", 0.5)],
    }
    result = plan(state)
    assert len(result["nodes_to_drain"]) == 2 and validate(state, result) == []
    assert result["freed"] == {"CPU": 16, "GPU": 2}


def test_pools_are_never_mixed():
    state = {
        "nodes": [node("h", 0, head=True), node("a", 4, "a100"), node("b", 4, "h100")],
        "replicas": [rep("1", "a", 1), rep("2", "b", 1)],
    }
    assert plan(state)["nodes_to_drain"] == []


def test_label_selector_allows_a_move_across_pools():
    state = {
        "nodes": [
            node("h", 0, head=True),
            dict(node("a", 4, "a100"), labels={"zone": "z1"}),
            dict(node("b", 4, "h100"), labels={"zone": "z1"}),
        ],
        "replicas": [rep("1", "a", 1, label_selector={"zone": "z1"}), rep("2", "b", 1)],
    }
    result = plan(state)
    assert result["nodes_to_drain"] == ["a"] and result["moves"] == [{"replica": "1", "from": "a", "to": "b"}]


def test_fewest_moves_and_expensive_nodes_first():
    state = {
        "nodes": [node("h", 0, head=True), node("big", 4, cost=3), node("small", 4, cost=1)],
        "replicas": [rep("1", "big", 1), rep("2", "big", 1), rep("3", "small", 1)],
    }
    result = plan(state)
    assert result["nodes_to_drain"] == ["big"] and len(result["moves"]) == 2


def test_spread_is_kept_when_it_costs_nothing():
    state = {
        "nodes": [node("h", 0, head=True), node("a", 4), node("b", 4), node("c", 4)],
        "replicas": [
            rep("x1", "a", 1, app="x"),
            rep("x2", "b", 1, app="x"),
            rep("y1", "c", 2, app="y"),
            rep("z1", "b", 1, app="z"),
        ],
    }
    result = plan(state)
    assert len(result["nodes_to_drain"]) == 1
    where = {"x1": "a", "x2": "b", "y1": "c", "z1": "b"}
    for m in result["moves"]:
        where[m["replica"]] = m["to"]
    assert where["x1"] != where["x2"]


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"nodes": []},
        {"nodes": [{"id": "a"}], "replicas": [{"id": "r", "node": "zz"}]},
        {"nodes": [{"id": "a"}, {"id": "a"}], "replicas": []},
    ],
)
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        plan(bad)


def test_management_command_prints_the_plan(tmp_path, capsys):
    from django.core.management import call_command

    state = {
        "nodes": [node("h", 0, head=True), node("a", 1), node("b", 1)],
        "replicas": [rep("1", "a", 0.5), rep("2", "b", 0.25)],
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    call_command("compaction_plan", "--input", str(path))
    out = json.loads(capsys.readouterr().out)
    assert out["nodes_to_drain"] == ["b"] and out["moves"] == [{"replica": "2", "from": "b", "to": "a"}]
    assert out["freed"] == {"CPU": 8, "GPU": 1}


def _two_cards(held_b: float) -> dict:
    """Two nodes with one H100 each; a 0.25-GPU replica on each, the first holding 60 GiB of its card."""
    card = 81559.0
    return {
        "nodes": [
            {"id": "a", "resources": {"GPU": 1, "CPU": 4}, "pool": "p", "gpu_cards": [card]},
            {"id": "b", "resources": {"GPU": 1, "CPU": 4}, "pool": "p", "gpu_cards": [card]},
        ],
        "replicas": [
            {"id": "big", "node": "a", "resources": {"GPU": 0.25}, "gpu_memory_mib": 61440, "card": 0},
            {"id": "other", "node": "b", "resources": {"GPU": 0.25}, "gpu_memory_mib": held_b, "card": 0},
        ],
    }


def test_real_memory_keeps_replicas_that_do_not_fit_one_card_apart():
    # By num_gpus alone the two 0.25 replicas share a card and free a node...
    by_label = _two_cards(40960)
    for n in by_label["nodes"]:
        n.pop("gpu_cards")
    assert len(plan(by_label)["nodes_to_drain"]) == 1
    # ...but 60 GiB and 40 GiB do not fit one 80 GB card together: no plan puts them there.
    state = _two_cards(40960)
    result = plan(state)
    assert result["nodes_to_drain"] == [] and result["moves"] == []
    # A plan that does is refused by the rules every plan must keep.
    forced = {"nodes_to_drain": ["b"], "moves": [{"replica": "other", "from": "b", "to": "a", "card": 0}], "freed": {}}
    assert any("card 0 of node a" in e for e in validate(state, forced))


def test_replicas_whose_memory_fits_one_card_are_packed_and_the_move_names_the_card():
    state = _two_cards(8192)
    result = plan(state)
    (drained,) = result["nodes_to_drain"]
    (move,) = result["moves"]
    assert move["from"] == drained and move["to"] != drained and move["card"] == 0
    assert validate(state, result) == []
