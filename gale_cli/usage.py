"""Usage and cost from the deployments' ledgers, as their metrics report them (pure functions).

Each deployment's ledger (`serving.ledger_actor`) publishes running totals per
UTC hour: requests and tokens by key, replica-seconds by hardware profile. Here
they are summed over the hours in a `--since` span, by key or by day, and priced
at each hardware profile's price per replica-hour.
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from gale_cli.metrics_reader import Sample
from serving import metrics as names

HOUR_S = 3600
COUNTS = {
    names.USAGE_REQUESTS: "requests",
    names.USAGE_PROMPT_TOKENS: "prompt_tokens",
    names.USAGE_COMPLETION_TOKENS: "completion_tokens",
}


def hour_start(label: str) -> float:
    """The epoch seconds of an hour label like 2026-12-02T09 (UTC)."""
    return float(calendar.timegm(time.strptime(label, "%Y-%m-%dT%H")))


def _zero() -> dict[str, int]:
    return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}


def usage(
    samples: Iterable[Sample],
    *,
    since_s: float,
    by: str = "key",
    now: float | None = None,
    prices: Mapping[str, float] | None = None,
    key_names: Mapping[tuple[str, str], str] | None = None,
    only: str | None = None,
) -> list[dict[str, Any]]:
    """Each deployment's requests, tokens, replica-hours and cost over the last `since_s` seconds.

    An hour counts if any of it falls in the span. `by` is `key` (a row per key) or `day`
    (a row per UTC day). `prices` is per replica-hour by hardware profile id.
    """
    now = time.time() if now is None else now
    start = now - since_s
    totals: dict[str, dict[str, int]] = defaultdict(_zero)
    rows: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(_zero))
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        deployment = sample.labels.get(names.DEPLOYMENT, "")
        label = sample.labels.get(names.HOUR)
        if label is None or (only is not None and deployment != only):
            continue
        at = hour_start(label)
        if at + HOUR_S <= start:
            continue
        if sample.name == names.USAGE_REPLICA_SECONDS:
            seconds[deployment][sample.labels.get(names.HARDWARE, "")] += sample.value
        elif sample.name in COUNTS:
            field = COUNTS[sample.name]
            row = sample.labels.get(names.KEY, "") if by == "key" else label[:10]
            rows[deployment][row][field] += int(sample.value)
            totals[deployment][field] += int(sample.value)
    result = []
    for deployment in sorted(set(totals) | set(seconds)):
        hardware: list[dict[str, Any]] = [
            {
                "id": profile,
                "replica_hours": round(value / HOUR_S, 4),
                "price_per_hour": (prices or {}).get(profile),
                "cost": _cost(value, (prices or {}).get(profile)),
            }
            for profile, value in sorted(seconds[deployment].items())
        ]
        costs = [float(h["cost"]) for h in hardware if h["cost"] is not None]
        entry: dict[str, Any] = {
            "name": deployment,
            **totals[deployment],
            "hardware": hardware,
            "cost": round(sum(costs), 4),
        }
        if by == "key":
            entry["keys"] = [
                {"id": key, "name": (key_names or {}).get((deployment, key)), **counts}
                for key, counts in sorted(rows[deployment].items())
            ]
        else:
            entry["days"] = [
                {"day": day, **counts} for day, counts in sorted(rows[deployment].items())
            ]
        result.append(entry)
    return result


def empty(deployment: str, by: str) -> dict[str, Any]:
    """A deployment's row when its ledger has counted nothing."""
    rows = "keys" if by == "key" else "days"
    return {"name": deployment, **_zero(), "hardware": [], "cost": 0.0, rows: []}


def _cost(seconds: float, price: float | None) -> float | None:
    return None if price is None else round(seconds / HOUR_S * price, 4)


def key_usage(samples: Iterable[Sample], deployment: str) -> dict[str, dict[str, int]]:
    """Every key's requests and tokens in all (as the ledger keeps them), by key id."""
    found: dict[str, dict[str, int]] = defaultdict(_zero)
    for sample in samples:
        if sample.labels.get(names.DEPLOYMENT) == deployment and sample.name in COUNTS:
            found[sample.labels.get(names.KEY, "")][COUNTS[sample.name]] += int(sample.value)
    return dict(found)
