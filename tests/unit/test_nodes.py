"""Nodes, and which replica runs where: pure functions over the State API's and Serve's JSON."""

from __future__ import annotations

from typing import Any

import pytest

from gale_cli.errors import UsageError
from gale_cli.nodes import join_command, lost_nodes, nodes_of, resources_text, where_replicas_run
from serving.catalog import GIB

HEAD = {
    "node_id": "h" * 56,
    "node_ip": "10.0.0.1",
    "is_head_node": True,
    "state": "ALIVE",
    "resources_total": {"CPU": 16.0, "memory": 64 * GIB},
}
WORKER = {
    "node_id": "w" * 56,
    "node_ip": "10.0.0.2",
    "is_head_node": False,
    "state": "ALIVE",
    "resources_total": {"CPU": 4.0, "memory": 16 * GIB, "GPU": 1.0, "accelerator_type:L4": 1.0},
}
LOST = {**WORKER, "state": "DEAD", "state_message": "Terminated due to preemption"}
L4_OPTIONS = {"num_cpus": 4, "memory": 16 * GIB, "num_gpus": 1, "accelerator_type": "L4"}


def app(*replicas: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "chat",
        "deployments": {"GaleModel": {"replicas": list(replicas)}},
        "deployed_app_config": {
            "deployments": [{"name": "GaleModel", "ray_actor_options": options or L4_OPTIONS}]
        },
    }


def test_nodes_list_the_head_first_and_lost_ones_last() -> None:
    nodes = nodes_of([LOST, {**WORKER, "node_id": "x" * 56}, HEAD])
    assert [(n.is_head, n.alive) for n in nodes] == [(True, True), (False, True), (False, False)]
    assert nodes[0].label == "hhhhhhhh (10.0.0.1, head)"
    assert nodes[2].message == "Terminated due to preemption"


def test_resources_read_as_a_person_says_them() -> None:
    assert resources_text(WORKER["resources_total"]) == "4 CPU, 16 GiB, 1 × L4"
    assert resources_text({"CPU": 2.0, "memory": 8 * GIB, "GPU": 2.0}) == "2 CPU, 8 GiB, 2 GPU"


def test_a_replica_is_shown_on_its_node() -> None:
    running = {"replica_id": "r1", "state": "RUNNING", "node_id": WORKER["node_id"]}
    rows, lost = where_replicas_run(app(running), [HEAD, WORKER])
    assert rows == [
        {
            "replica_id": "r1",
            "state": "RUNNING",
            "node_id": WORKER["node_id"],
            "node": "wwwwwwww (10.0.0.2, worker)",
        }
    ]
    assert lost is None


def test_a_lost_node_with_the_only_matching_hardware_is_named() -> None:
    waiting = {"replica_id": "r2", "state": "STARTING", "node_id": None}
    rows, lost = where_replicas_run(app(waiting), [HEAD, LOST])
    assert rows[0]["node"] == "not placed yet"
    assert lost == "node wwwwwwww (10.0.0.2, worker) was lost, and no other node has the hardware"


def test_a_lost_node_is_not_blamed_when_another_could_hold_the_replica() -> None:
    waiting = {"replica_id": "r2", "state": "STARTING", "node_id": None}
    other = {**WORKER, "node_id": "y" * 56}
    assert where_replicas_run(app(waiting), [HEAD, LOST, other])[1] is None
    # A CPU replica never waited for the lost GPU node.
    cpu = {"num_cpus": 2, "memory": 8 * GIB}
    assert lost_nodes(nodes_of([HEAD, LOST]), cpu) == []


@pytest.mark.parametrize(
    ("address", "options", "expected"),
    [
        ("10.0.0.1:6379", {}, ["--address=10.0.0.1:6379"]),
        ("head.local", {}, ["--address=head.local:6379"]),
        (
            "10.0.0.1:7000",
            {"gpus": 1, "accelerator": "L4", "cpus": 4, "memory_gb": 16},
            [
                "--address=10.0.0.1:7000",
                "--num-cpus=4",
                f"--memory={16 * GIB}",
                "--num-gpus=1",
                '--resources={"accelerator_type:L4": 1}',
            ],
        ),
        ("10.0.0.1", {"block": True}, ["--address=10.0.0.1:6379", "--block"]),
    ],
)
def test_join_is_rays_own_start_with_the_nodes_resources(
    address: str, options: dict[str, Any], expected: list[str]
) -> None:
    command = join_command(address, **options)
    assert command[1:2] == ["start"] and "--head" not in command
    always = {"--dashboard-agent-listen-port", "--disable-usage-stats"}
    assert [arg for arg in command[2:] if arg.split("=")[0] not in always] == expected


@pytest.mark.parametrize(
    ("address", "options", "message"),
    [
        ("10.0.0.1:6379", {"accelerator": "L4"}, "--accelerator needs --gpus"),
        (":6379", {}, "not a head address"),
        ("10.0.0.1:ray", {}, "not a head address"),
    ],
)
def test_bad_joins_say_what_to_give(address: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        join_command(address, **options)


def test_a_replacement_waiting_for_hardware_is_reported_while_serve_says_running() -> None:
    from gale_cli.progress import progress_of

    waiting = {"replica_id": "r2", "state": "STARTING", "node_id": None}
    stuck = {**app(waiting), "status": "RUNNING"}
    stuck["deployments"]["GaleModel"]["target_num_replicas"] = 1
    progress = progress_of(stuck, lambda: [HEAD["resources_total"]])
    assert progress.waiting_for_hardware is not None
    assert "1 × L4" in progress.waiting_for_hardware
    running = {"replica_id": "r1", "state": "RUNNING", "node_id": WORKER["node_id"]}
    healthy = {**app(running), "status": "RUNNING"}
    healthy["deployments"]["GaleModel"]["target_num_replicas"] = 1
    assert progress_of(healthy, lambda: []).waiting_for_hardware is None
