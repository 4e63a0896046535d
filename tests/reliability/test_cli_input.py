"""Bad input to the CLI: exit 2, a message naming the field, nothing changed anywhere.

Each case runs `gale deploy` as a script would (in-process through `gale_cli.main.main`)
against the session's real cluster, in a GALE_HOME of its own, and compares the
cluster's applications (GET /api/serve/applications/) and every local state file
before and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gale_cli.cluster import ServeClient
from gale_cli.main import main
from tests.reliability.conftest import apps_snapshot, home_snapshot

pytestmark = pytest.mark.cluster

BASE = ["deploy", "--no-input", "--model", "smollm2-135m-instruct", "--hardware", "cpu"]
GOOD_FILE = "name: from-file\nmodel: smollm2-135m-instruct\nhardware: cpu\n"

# (id, argv after BASE (None: no BASE), spec file text or None, what the message must name)
CASES: list[tuple[str, list[str] | None, str | None, str]] = [
    (
        "temperature above 2",
        ["--name", "x1", "--temperature", "2.5", "--accept-terms"],
        None,
        "temperature",
    ),
    (
        "temperature not a number",
        ["--name", "x1", "--temperature", "hot", "--accept-terms"],
        None,
        "temperature",
    ),
    ("top-p 0", ["--name", "x1", "--top-p", "0", "--accept-terms"], None, "top"),
    ("top-k 0", ["--name", "x1", "--top-k", "0", "--accept-terms"], None, "top"),
    ("max-length 0", ["--name", "x1", "--max-length", "0", "--accept-terms"], None, "max"),
    ("batch-size 0", ["--name", "x1", "--batch-size", "0", "--accept-terms"], None, "batch"),
    ("batch-size 1000", ["--name", "x1", "--batch-size", "1000", "--accept-terms"], None, "batch"),
    (
        "min above max",
        ["--name", "x1", "--min-replicas", "3", "--max-replicas", "2", "--accept-terms"],
        None,
        "replicas",
    ),
    (
        "negative scale-up delay",
        ["--name", "x1", "--scale-up-delay", "-1", "--accept-terms"],
        None,
        "scale",
    ),
    (
        "five stop sequences",
        ["--name", "x1", *[a for s in "abcde" for a in ("--stop", s)], "--accept-terms"],
        None,
        "stop",
    ),
    ("name with capitals", ["--name", "Bad_Name", "--accept-terms"], None, "name"),
    ("name starting with a hyphen", ["--name", "-bad", "--accept-terms"], None, "name"),
    ("name too long", ["--name", "a" * 64, "--accept-terms"], None, "name"),
    ("missing name", ["--accept-terms"], None, "name"),
    ("missing terms", ["--name", "no-terms"], None, "accept-terms"),
    (
        "unknown model",
        [
            "deploy",
            "--no-input",
            "--model",
            "no-such-model",
            "--hardware",
            "cpu",
            "--name",
            "x1",
            "--accept-terms",
        ],
        None,
        "model",
    ),
    (
        "unknown hardware",
        [
            "deploy",
            "--no-input",
            "--model",
            "smollm2-135m-instruct",
            "--hardware",
            "tpu-9000",
            "--name",
            "x1",
            "--accept-terms",
        ],
        None,
        "hardware",
    ),
    ("file: malformed YAML", None, "name: [unclosed\nmodel: x\n", "spec.yaml"),
    ("file: not a mapping", None, "- just\n- a list\n", "spec.yaml"),
    ("file: unknown field", None, GOOD_FILE + "colour: blue\n", "colour"),
    ("file: temperature out of range", None, GOOD_FILE + "temperature: 9\n", "temperature"),
    ("file: wrong type", None, GOOD_FILE + "batch_size: lots\n", "batch_size"),
    (
        "file: invalid name",
        None,
        "name: Not Valid\nmodel: smollm2-135m-instruct\nhardware: cpu\n",
        "name",
    ),
    (
        "file: unknown hardware",
        None,
        "name: ok\nmodel: smollm2-135m-instruct\nhardware: abacus\n",
        "hardware",
    ),
]


@pytest.mark.parametrize(
    ("argv", "spec_file", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_exits_2_and_changes_nothing(
    ray_cluster: ServeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str] | None,
    spec_file: str | None,
    names: str,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("GALE_HOME", str(home))
    # The session's token, so the command could reach the cluster if it tried to.
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_cluster.config.token or "")
    if spec_file is not None:
        path = tmp_path / "spec.yaml"
        path.write_text(spec_file)
        command = ["deploy", "--no-input", "--accept-terms", "-f", str(path)]
    else:
        command = argv if argv and argv[0] == "deploy" else [*BASE, *(argv or [])]
    before_apps, before_home = apps_snapshot(ray_cluster), home_snapshot(home)

    code = main(command)
    out, err = capsys.readouterr()

    assert code == 2, (out, err)
    assert names in err, err
    assert out == ""
    assert "Traceback" not in err
    assert apps_snapshot(ray_cluster) == before_apps
    assert home_snapshot(home) == before_home
