"""`gale usage` and the limit flags without a cluster: the sums, and bad input (exit 2)."""

from __future__ import annotations

import pytest

from gale_cli.main import main
from gale_cli.metrics_reader import Sample
from gale_cli.usage import hour_start, key_usage, usage
from serving import metrics as names

NOW = hour_start("2026-12-02T10") + 1800  # 10:30 UTC


def counted(name: str, key: str, hour: str, value: float, deployment: str = "smol") -> Sample:
    labels = {names.DEPLOYMENT: deployment, names.KEY: key, names.HOUR: hour}
    return Sample(name, labels, value)


def seconds(hardware: str, hour: str, value: float, deployment: str = "smol") -> Sample:
    labels = {names.DEPLOYMENT: deployment, names.HARDWARE: hardware, names.HOUR: hour}
    return Sample(names.USAGE_REPLICA_SECONDS, labels, value)


SAMPLES = [
    counted(names.USAGE_REQUESTS, "k1", "2026-12-02T10", 3),
    counted(names.USAGE_PROMPT_TOKENS, "k1", "2026-12-02T10", 30),
    counted(names.USAGE_COMPLETION_TOKENS, "k1", "2026-12-02T10", 6),
    # The same key's hour as a restarted ledger reported it: summed.
    counted(names.USAGE_REQUESTS, "k1", "2026-12-02T10", 1),
    counted(names.USAGE_REQUESTS, "k2", "2026-12-01T23", 5),
    counted(names.USAGE_REQUESTS, "k2", "2026-11-20T08", 100),  # outside a day's span
    counted(names.USAGE_REQUESTS, "k9", "2026-12-02T10", 7, deployment="other"),
    seconds("cpu", "2026-12-02T10", 1800),
    seconds("cpu", "2026-12-02T09", 3600),
    seconds("a10-single", "2026-12-02T09", 360),
    Sample(names.REQUESTS, {names.DEPLOYMENT: "smol", names.KEY: "k1"}, 50),  # not usage
]
PRICES = {"cpu": 0.1, "a10-single": 1.0}


def test_usage_by_key_sums_the_span_and_prices_replica_hours() -> None:
    rows = usage(SAMPLES, since_s=86400, now=NOW, prices=PRICES, key_names={("smol", "k1"): "ci"})
    assert [r["name"] for r in rows] == ["other", "smol"]
    smol = rows[1]
    assert (smol["requests"], smol["prompt_tokens"], smol["completion_tokens"]) == (9, 30, 6)
    assert smol["keys"] == [
        {"id": "k1", "name": "ci", "requests": 4, "prompt_tokens": 30, "completion_tokens": 6},
        {"id": "k2", "name": None, "requests": 5, "prompt_tokens": 0, "completion_tokens": 0},
    ]
    assert smol["hardware"] == [
        {"id": "a10-single", "replica_hours": 0.1, "price_per_hour": 1.0, "cost": 0.1},
        {"id": "cpu", "replica_hours": 1.5, "price_per_hour": 0.1, "cost": 0.15},
    ]
    assert smol["cost"] == pytest.approx(0.25)


def test_usage_by_day_and_a_short_span() -> None:
    rows = usage(SAMPLES, since_s=3600, by="day", now=NOW, only="smol")
    # 09:30 to 10:30: the 09 and 10 hours count (any part of them is in the span).
    assert rows[0]["days"] == [
        {"day": "2026-12-02", "requests": 4, "prompt_tokens": 30, "completion_tokens": 6}
    ]
    assert rows[0]["hardware"][1]["replica_hours"] == 1.5


def test_key_usage_is_every_hour_kept() -> None:
    assert key_usage(SAMPLES, "smol")["k2"]["requests"] == 105


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["keys", "create", "x", "--rpm", "0"], "--rpm"),
        (["keys", "create", "x", "--token-budget", "lots"], "--token-budget"),
        (["keys", "update", "x", "key_000000000000", "--concurrency", "-1"], "--concurrency"),
        (["keys", "update", "x", "key_000000000000"], "--rpm"),
        (["keys", "update", "x", "key_000000000000", "--clear", "speed"], "--clear"),
        (["keys", "update", "x", "key_000000000000", "--tpm", "9", "--clear", "tpm"], "--tpm"),
        (["usage", "--since", "yesterday"], "--since"),
        (["usage", "--by", "week"], "--by"),
        (
            ["deploy", "--no-input", "--model", "smollm2-135m-instruct", "--hardware", "cpu"]
            + ["--name", "x1", "--accept-terms", "--key-tpm", "0"],
            "--key-tpm",
        ),
        (
            ["deploy", "--no-input", "--model", "smollm2-135m-instruct", "--hardware", "cpu"]
            + ["--name", "x1", "--accept-terms", "--key-limit-window", "120"],
            "--key-limit-window",
        ),
    ],
)
def test_bad_limit_flags_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert captured.out == ""
