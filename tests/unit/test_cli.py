"""The CLI as a script uses it: exit codes, stdout data and stderr messages, asserted apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from gale_cli.commands import spec_options
from gale_cli.commands.specflags import options_source
from gale_cli.main import main
from gale_cli.output import render_review
from serving.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BASE = [
    "deploy",
    "--no-input",
    "--model",
    "smollm2-135m-instruct",
    "--name",
    "demo",
    "--hardware",
    "cpu",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_json_is_the_spec_and_the_serve_application(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, *BASE, "--temperature", "0", "--stop", "###", "--dry-run", "--json"
    )
    assert code == 0
    plan = json.loads(out)
    assert plan["spec"]["temperature"] == 0 and plan["spec"]["stop"] == ["###"]
    app = plan["serve_application"]
    assert app["route_prefix"] == "/demo" and app["name"] == "demo"
    assert app["deployments"][0]["user_config"]["parameters"]["temperature"] == 0
    assert plan["fit"]["fits"] is True
    assert "Review" in err and "Fit" in err


def test_flags_override_the_spec_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "deploy",
        "--no-input",
        "-f",
        str(EXAMPLES / "smollm2-cpu.yaml"),
        "--name",
        "override",
        "--max-replicas",
        "3",
        "--dry-run",
        "--json",
    )
    assert code == 0
    spec = json.loads(out)["spec"]
    assert (spec["name"], spec["max_replicas"], spec["min_replicas"]) == ("override", 3, 1)


def test_invalid_values_exit_2_naming_each_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        *BASE,
        "--name",
        "Bad_Name",
        "--top-p",
        "0",
        "--min-replicas",
        "3",
        "--max-replicas",
        "2",
        "--dry-run",
    )
    assert code == 2 and out == ""
    assert "name (--name): 'Bad_Name' is not a valid name" in err
    assert "top_p (--top-p):" in err
    assert "max_replicas (--max-replicas): 2 is below min_replicas (3)" in err
    assert "Traceback" not in err


def test_missing_answers_name_their_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "deploy", "--no-input", "--dry-run")
    assert code == 2 and out == ""
    for flag in ("--name", "--model", "--hardware"):
        assert f"pass {flag}" in err


def test_terms_must_be_accepted_without_prompts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE)
    assert code == 2 and out == ""
    assert "--accept-terms" in err


def test_a_model_that_does_not_fit_is_refused_unless_forced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "deploy",
        "--no-input",
        "--model",
        "llama-3.3-70b-instruct",
        "--name",
        "big",
        "--hardware",
        "a10-single",
        "--accept-terms",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "does not fit" in err and "short by" in err and "--force" in err
    code, out, err = run(capsys, *argv, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["fit"]["fits"] is False


def test_bad_flag_types_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE, "--temperature", "hot")
    assert code == 2 and out == "" and "--temperature" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed", "not valid YAML (line 1"),
        ("- a list\n- not a mapping", "must hold a mapping"),
        (
            "name: x\nmodel: smollm2-135m-instruct\nhardware: cpu\ncolour: blue\n",
            "colour: unknown field",
        ),
        (
            "name: x\nmodel: smollm2-135m-instruct\nhardware: cpu\nbatch_size: 1000\n",
            "batch_size (--batch-size)",
        ),
    ],
)
def test_malformed_spec_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "deploy", "--no-input", "-f", str(path), "--dry-run")
    assert code == 2 and out == ""
    assert message in err


def test_missing_spec_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "deploy", "--no-input", "-f", str(tmp_path / "none.yaml"))
    assert code == 2 and "cannot read spec file" in err


def test_models_json_and_tag_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and "smollm2-135m-instruct" in {m["id"] for m in json.loads(out)}
    code, out, _ = run(capsys, "models", "--tag", "bundled", "--json")
    assert [m["id"] for m in json.loads(out)] == ["smollm2-135m-instruct"]


def test_models_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "show", "phi-4", "--json")
    assert code == 0 and json.loads(out)["context_length"] == 16384
    code, out, err = run(capsys, "models", "show", "gpt-5")
    assert code == 2 and out == "" and "unknown model 'gpt-5'" in err


def test_hardware_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hardware", "--json")
    profiles = {p["id"]: p for p in json.loads(out)}
    assert (
        code == 0
        and profiles["a10-x4"]["gpus"] == 4
        and profiles["a10-x4"]["accelerator_type"] == "A10G"
    )


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_validates(capsys: pytest.CaptureFixture[str], example: Path) -> None:
    code, out, err = run(capsys, "deploy", "--no-input", "-f", str(example), "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["fit"]["fits"] is True
    assert plan["serve_application"]["route_prefix"] == "/" + plan["spec"]["name"]


def test_ci_example_script_dry_run() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(EXAMPLES / "ci-deploy.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["spec"]["tags"] == ["ci", "smoke"] and plan["spec"]["stop"] == ["###"]


def test_help_does_not_import_ray_torch_or_transformers() -> None:
    code = (
        "import sys, gale_cli.main as m\n"
        "m.main(['--help'])\n"
        "heavy = ('ray', 'torch', 'transformers', 'questionary', 'httpx', 'pydantic', 'serving.spec')\n"
        "bad = [n for n in heavy if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_missing_local_model_path_is_refused_before_submitting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unreachable address that still counts as local: the check must come first.
    monkeypatch.setenv("GALE_RAY_ADDRESS", "http://127.0.0.1:9")
    argv = ["deploy", "--no-input", "--accept-terms", "--name", "local", "--hardware", "cpu"]
    code, out, err = run(capsys, *argv, "--model", str(tmp_path / "missing.gguf"))
    assert code == 2 and out == ""
    assert "missing.gguf does not exist on this machine" in err


def test_a_missing_model_path_is_refused_before_a_local_head_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded default with no head running: `deploy` would start one for a good path.
    monkeypatch.setenv("GALE_HOME", str(tmp_path))
    argv = ["deploy", "--no-input", "--accept-terms", "--name", "local", "--hardware", "cpu"]
    code, out, err = run(capsys, *argv, "--model", str(tmp_path / "missing.gguf"))
    assert code == 2 and out == ""
    assert "missing.gguf does not exist on this machine" in err
    assert "starting a local one" not in err and not (tmp_path / "ray-token").exists()


def test_describe_heads_the_configuration_with_what_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gale_cli import output
    from serving.spec import DeploymentSpec

    spec = DeploymentSpec(name="demo", model="smollm2-135m-instruct", hardware="cpu")
    output.show(output.render_description(spec))
    shown = capsys.readouterr().err
    assert shown.startswith("Configuration of 'demo'") and "Review" not in shown
    assert "Temperature" in shown and "Fit" in shown


def words_on_screen(command: str, columns: int) -> tuple[set[str], int]:
    """The words `gale COMMAND` prints at a terminal this wide, and its widest line."""
    env = {**os.environ, "COLUMNS": str(columns)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gale"), command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Box-drawing characters (U+2500 to U+257F) frame the cells; the rest are words.
    text = "".join(" " if 0x2500 <= ord(c) <= 0x257F else c for c in done.stdout)
    return set(text.split()), max(len(line) for line in lines)


@pytest.mark.parametrize("command", ["models", "hardware"])
def test_tables_fit_80_columns_without_breaking_words(command: str) -> None:
    wide, _ = words_on_screen(command, 250)
    narrow, widest = words_on_screen(command, 80)
    assert widest <= 80
    # A word cut in two ("Conte xt") shows pieces that the wide table never prints.
    assert narrow <= wide, narrow - wide
    assert {"ID", "Name"} <= narrow


def test_models_table_shows_tool_formats_and_reasoning_when_wide() -> None:
    wide, _ = words_on_screen("models", 250)
    assert {"Tools", "Reasoning", "llama4_pythonic", "openai_gptoss", "qwen3"} <= wide


def test_models_show_gives_tool_format_and_reasoning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "show", "gpt-oss-20b", "--json")
    shown = json.loads(out)
    assert code == 0
    assert (shown["tool_call_format"], shown["reasoning_parser"]) == ("openai", "openai_gptoss")
    code, out, _ = run(capsys, "models", "show", "smollm2-135m-instruct")
    assert code == 0 and "forced" in out  # a word, so wrapping cannot split it


SPEC_FLAGS = [
    *("--model", "--name", "--description", "--tag", "--trust-remote-code", "--temperature"),
    *("--max-length", "--top-p", "--top-k", "--stop", "--batch-size", "--min-replicas"),
    *("--max-replicas", "--scale-up-delay", "--scale-down-delay", "--hardware", "--engine"),
]


def help_text(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    return out


def test_deploy_and_redeploy_take_a_flag_per_spec_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    deploy_help = help_text(capsys, "deploy")
    redeploy_help = help_text(capsys, "redeploy")
    for flag in SPEC_FLAGS:
        assert f" {flag} " in deploy_help, flag
        assert (f" {flag} " in redeploy_help) is (flag != "--name"), flag
    assert "(0 to 86400)" in deploy_help and "hf:ORG/NAME[@REVISION]" in deploy_help


@pytest.mark.parametrize("command", [(), ("deploy",), ("redeploy",), ("list",)])
def test_help_shows_no_type_after_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = help_text(capsys, *command)
    assert "<bool>" not in text
    if command in (("deploy",), ("redeploy",)):
        assert "--timeout" in text and "<float>" in text  # options taking a value still say so


def test_spec_options_module_is_the_generated_one() -> None:
    generated = Path(spec_options.__file__).read_text()
    assert generated == options_source(), "run `python -m gale_cli.commands.specflags`"


def test_review_shows_each_field_with_its_label() -> None:
    spec = DeploymentSpec.model_validate(
        {"name": "demo", "model": "smollm2-135m-instruct", "hardware": "cpu", "stop": ["\n"]}
    )
    console = Console(width=200, record=True)
    console.print(render_review(spec))
    text = "\n".join(" ".join(line.split()) for line in console.export_text().splitlines())
    for line in ("Deployment name demo", "Scale-down delay 600 s", "Stop sequences '\\n'"):
        assert line in text, text
    assert "Description —" in text and "Engine auto" in text
    assert "Trust remote code" not in text
