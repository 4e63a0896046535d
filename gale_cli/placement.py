"""Why a replica cannot be placed: what it needs against what the cluster's nodes have.

Pure functions over the Serve REST API's JSON and the State API's node list, so
the wording is table-tested without a cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from serving.catalog import GIB

# Ray's slow-start message (deployment_state.py) carries both dicts as JSON.
_SCHEDULING = re.compile(
    r"to be scheduled.*Resources required for each replica: (?P<required>\{.*?\}), "
    r"total resources available: (?P<available>\{.*?\})",
    re.DOTALL,
)


def replica_needs(actor_options: Mapping[str, Any] | None) -> dict[str, float]:
    """The resources one replica asks for, in Ray's resource names."""
    options = actor_options or {}
    needs: dict[str, float] = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        needs["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        needs["memory"] = float(options["memory"])
    if options.get("accelerator_type"):
        # Ray asks for a sliver of this resource; nodes of that GPU type carry it.
        needs[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    return needs


def waiting_for_scheduling(message: str) -> tuple[dict[str, float], dict[str, float]] | None:
    """(required, free) when a deployment message says replicas wait to be scheduled."""
    match = _SCHEDULING.search(message or "")
    if not match:
        return None
    try:
        required, available = json.loads(match["required"]), json.loads(match["available"])
    except ValueError:
        return {}, {}
    return (required if isinstance(required, dict) else {}), available


def _accelerator(needs: Mapping[str, float]) -> str | None:
    for key in needs:
        if key.startswith("accelerator_type:"):
            return key.split(":", 1)[1]
    return None


def _amount(resource: str, value: float, accelerator: str | None = None) -> str:
    number = f"{value:g}"
    if resource == "GPU":
        return f"{number} × {accelerator}" if accelerator else f"{number} GPU"
    if resource == "CPU":
        return f"{number} CPU"
    if resource == "memory":
        return f"{value / GIB:g} GiB memory"
    return f"{number} {resource}"


def _node_has(node: Mapping[str, float], resource: str, accelerator: str | None) -> float:
    if resource == "GPU" and accelerator and not node.get(f"accelerator_type:{accelerator}"):
        return 0.0  # GPUs of another type do not count
    return float(node.get(resource, 0.0))


def shortfall(needs: Mapping[str, float], nodes: Iterable[Mapping[str, float]]) -> str | None:
    """'needs 4 × A10G per replica; the cluster has 0' when no node can hold a replica."""
    nodes = list(nodes)
    accelerator = _accelerator(needs)
    wanted = {k: v for k, v in needs.items() if k in ("GPU", "CPU", "memory") and v > 0}
    if accelerator and "GPU" not in wanted:
        wanted["GPU"] = 1.0
    if any(all(_node_has(n, k, accelerator) >= v for k, v in wanted.items()) for n in nodes):
        return None
    missing: list[str] = []
    has: list[str] = []
    for resource, value in wanted.items():
        total = sum(_node_has(n, resource, accelerator) for n in nodes)
        largest = max((_node_has(n, resource, accelerator) for n in nodes), default=0.0)
        if largest >= value:
            continue
        missing.append(_amount(resource, value, accelerator))
        if total >= value:
            has.append(
                f"no node with that many (largest: {_amount(resource, largest, accelerator)})"
            )
        elif resource == "GPU" and accelerator:
            has.append(f"{total:g}")
        else:
            has.append(_amount(resource, total, accelerator))
    if not missing:
        return None
    return f"needs {', '.join(missing)} per replica; the cluster has {', '.join(has)}"


def busy(required: Mapping[str, float], free: Mapping[str, float]) -> str:
    """Wording for a replica whose hardware exists but is in use by other replicas."""
    accelerator = _accelerator(required)
    shown = [k for k in ("GPU", "CPU", "memory") if required.get(k)]
    needs = ", ".join(_amount(k, float(required[k]), accelerator) for k in shown)
    free_now = ", ".join(_amount(k, float(free.get(k, 0)), accelerator) for k in shown)
    if not needs:
        return "a replica is waiting to be scheduled"
    return f"needs {needs} per replica; free now: {free_now or 'none'} (the rest is in use)"
