"""Two machines, one cluster: two GALE_HOMEs (each its own lock and state) against the real head.

Interleaved key creates and revokes, a stale write from the other machine landing
right after one's PUT, two deploys of one name, and what restore and revoke promise.
The short form runs a few rounds; the full form (GALE_RELIABILITY=full) many.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from devstack import BUNDLED_MODEL, eventually
from gale_cli import lifecycle
from gale_cli.cluster import ServeClient
from gale_cli.errors import UsageError
from gale_cli.state import State
from serving.keys import match_key
from serving.spec import DeploymentSpec
from tests.conftest import Deployed
from tests.reliability.conftest import scaled

pytestmark = [pytest.mark.cluster, pytest.mark.model]


class Gate(httpx.BaseTransport):
    """The real transport, with a hook around each PUT (the seam for timing a race)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.before_put: Callable[[], None] | None = None
        self.after_put: Callable[[], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        put = request.method == "PUT"
        if put and self.before_put:
            self.before_put()
        response = self.inner.handle_request(request)
        if put and self.after_put:
            response.read()
            self.after_put()
        return response

    def close(self) -> None:
        self.inner.close()


class Machine:
    """One machine: a GALE_HOME of its own and a client of the session's cluster."""

    def __init__(self, cluster: ServeClient, home: Path) -> None:
        home.mkdir()
        self.gate = Gate()
        config = replace(cluster.config, gale_home=home)
        self.client = ServeClient(config, transport=self.gate)
        self.state = State(home / "state.db")


@pytest.fixture
def machines(bundled_model: Deployed, tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:
    pair = (
        Machine(bundled_model.client, tmp_path / "a"),
        Machine(bundled_model.client, tmp_path / "b"),
    )
    yield pair
    # Leave the session's deployment with its own key only.
    bundled_model.apply([bundled_model.record])
    for machine in pair:
        machine.client.close()


def _ids(machine: Machine, name: str) -> set[str]:
    return {k.id for k in lifecycle.live_deployments(machine.client)[name].keys}


def test_interleaved_creates_and_revokes_from_two_machines_all_hold(
    machines: tuple[Machine, Machine], bundled_model: Deployed
) -> None:
    a, b = machines
    name = bundled_model.name
    rounds = int(scaled(3, 12))
    to_revoke = [
        lifecycle.create_key(a.client, a.state, name, f"old-{i}")[1] for i in range(rounds)
    ]
    created: list[str] = []
    errors: list[BaseException] = []

    def creates() -> None:
        try:
            for i in range(rounds):
                created.append(lifecycle.create_key(a.client, a.state, name, f"new-{i}")[1].id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=creates)
    worker.start()
    for record in to_revoke:
        lifecycle.revoke_key(b.client, b.state, name, record.id)
    worker.join(timeout=300)
    assert not errors, errors
    ids = _ids(a, name)
    assert not ids & {r.id for r in to_revoke}, "a revoked key came back"
    assert set(created) <= ids, "a created key was lost"
    assert bundled_model.record.id in ids


def test_a_stale_write_landing_after_a_revoke_does_not_undo_it(
    machines: tuple[Machine, Machine], bundled_model: Deployed
) -> None:
    a, b = machines
    name = bundled_model.name
    key, record = lifecycle.create_key(a.client, a.state, name, "to-revoke")
    at_put, b_done = threading.Event(), threading.Event()

    def hold() -> None:
        a.gate.before_put = None
        at_put.set()
        assert b_done.wait(60)

    # A reads (the key is there), then waits at its PUT until B's revoke is on the
    # cluster: A's PUT then carries the revoked key back, as a slower machine's would.
    a.gate.before_put = hold
    b.gate.after_put = b_done.set
    made: list[str] = []
    worker = threading.Thread(
        target=lambda: made.append(lifecycle.create_key(a.client, a.state, name, "late")[1].id)
    )
    worker.start()
    assert at_put.wait(60)
    lifecycle.revoke_key(b.client, b.state, name, record.id)
    worker.join(timeout=120)
    ids = _ids(a, name)
    assert record.id not in ids, "the stale write brought the revoked key back"
    assert made and made[0] in ids, "the other machine's key was lost"
    eventually(lambda: _status(bundled_model, key) == 401, 30, "the revoked key refused")


def test_of_two_deploys_of_one_name_one_wins_and_the_other_is_told(
    machines: tuple[Machine, Machine], delete_after: Callable[..., str]
) -> None:
    a, b = machines
    spec = DeploymentSpec(
        name=delete_after("race-deploy", wait_removed=False),
        model=BUNDLED_MODEL,
        hardware="cpu",
        max_length=8,
    )
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def deploy(machine: Machine, label: str) -> None:
        start.wait()
        try:
            results[label] = lifecycle.deploy(machine.client, machine.state, spec)
        except UsageError as exc:
            results[label] = exc

    threads = [threading.Thread(target=deploy, args=(m, n)) for m, n in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    keys = [r for r in results.values() if isinstance(r, str)]
    refused = [r for r in results.values() if isinstance(r, UsageError)]
    assert len(keys) == 1 and len(refused) == 1, results
    assert "already exists" in refused[0].message
    assert "gale redeploy race-deploy" in (refused[0].hint or "")
    live = lifecycle.live_deployments(a.client)["race-deploy"].keys
    assert match_key(keys[0], live) is not None  # the winner's key is the one that works


def test_what_another_machine_revoked_or_deleted_restore_does_not_bring_back(
    machines: tuple[Machine, Machine], bundled_model: Deployed, delete_after: Callable[..., str]
) -> None:
    a, b = machines
    name = bundled_model.name
    _, record = lifecycle.create_key(a.client, a.state, name, "revoked-elsewhere")
    lifecycle.revoke_key(b.client, b.state, name, record.id)
    lifecycle.all_deployments(a.client, a.state)  # A runs any command afterwards
    kept = a.state.get(name)
    assert kept is not None and record.id not in {k.id for k in kept.keys}

    spec = DeploymentSpec(
        name=delete_after("deleted-elsewhere", wait_removed=False),
        model=BUNDLED_MODEL,
        hardware="cpu",
        max_length=8,
    )
    lifecycle.deploy(a.client, a.state, spec)
    lifecycle.delete(b.client, b.state, spec.name)
    a.client.wait_for_removal(spec.name, 120, poll_interval=0.2)
    assert lifecycle.restore(a.client, a.state) == []
    assert spec.name not in lifecycle.live_deployments(a.client)
    assert lifecycle.find(a.client, a.state, spec.name).status == "Undeployed"


def test_revoke_returns_when_the_replicas_refuse_the_key(
    machines: tuple[Machine, Machine], bundled_model: Deployed
) -> None:
    a, _ = machines
    key, record = lifecycle.create_key(a.client, a.state, bundled_model.name, "confirmed")
    eventually(lambda: _status(bundled_model, key) == 200, 30, "the new key works")
    lifecycle.revoke_key(a.client, a.state, bundled_model.name, record.id, confirm_within=60)
    assert _status(bundled_model, key) == 401  # at once: no waiting after the command


def _status(deployed: Deployed, key: str) -> int:
    response = httpx.get(
        deployed.base_url + "/models",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    return response.status_code
