"""The embedded default: a Ray head on this machine, started from this Python environment.

Started with `ray start --head` from the `ray` script next to `sys.executable`, so
its workers run the same interpreter and import the same (editable) `serving`.
The dashboard and Serve's HTTP proxy listen on loopback only. Ray itself turns a
loopback node address into the machine's IP, so its GCS and raylet ports are
reachable from the network: Ray's token authentication is what guards them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gale_cli.cluster import ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.errors import ClusterError, ClusterUnreachable, UsageError
from serving import catalog, cores

MIN_CPUS = 8
MIN_MEMORY_GB = 16
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class LocalHeadStatus:
    """Whether the local head answers, and what it offers."""

    running: bool
    dashboard_url: str
    serve_url: str
    resources: dict[str, float]
    token_file: Path


def ray_executable() -> Path:
    """The `ray` script of this Python environment."""
    path = Path(sys.executable).parent / "ray"
    if not path.exists():
        raise ClusterError(
            f"Ray is not installed in this Python environment ({sys.executable})",
            hint="install the serving extras: pip install 'gale[serve]'",
        )
    return path


def ensure_token(config: ClusterConfig) -> str:
    """The local head's token: the configured one, else gale's own (created 0600 if missing)."""
    if config.token:
        return config.token
    config.gale_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config.token_file
    if not path.exists():
        # Created with 0600 from the start: never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path.read_text().strip()


def head_resources(gpus: int, accelerator: str | None) -> tuple[int, int]:
    """Logical CPUs and memory (bytes) to declare: two replicas of the largest fitting profile.

    Two, so a rolling update with surge can start the new replica before the old
    one stops. The figures are logical: Ray places by them, the machine may be smaller.
    """
    fitting = [
        p
        for p in catalog.hardware().values()
        if (not p.is_gpu) or (p.accelerator_type == accelerator and p.gpus <= gpus)
    ]
    cpus = max([MIN_CPUS, *(2 * p.cpus for p in fitting)])
    memory_gb = max([MIN_MEMORY_GB, *(2 * p.memory_gb for p in fitting)])
    return cpus, int(memory_gb * catalog.GIB)


def start_command(config: ClusterConfig, gpus: int, accelerator: str | None) -> list[str]:
    """The `ray start --head` command line for the local head."""
    dashboard = urlsplit(config.dashboard_url)
    cpus, memory = head_resources(gpus, accelerator)
    command = [
        str(ray_executable()),
        "start",
        "--head",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard.port or 8265}",
        f"--num-cpus={cpus}",
        f"--memory={memory}",
        "--disable-usage-stats",
    ]
    if gpus:
        command.append(f"--num-gpus={gpus}")
        command.append("--resources=" + json.dumps({f"accelerator_type:{accelerator}": gpus}))
    return command


# Ray starts its workers (Serve's proxy and controller, every replica and what a replica
# starts, such as llama-server) at nice 15, beneath its own daemons. On a local head the
# daemons keep to their own core (serving.cores), and at nice 15 an engine thread that
# shares that core gives way to every one of their wake-ups, while the other engine
# threads wait for it at the next barrier: llama.cpp served 8 and 64 requests at once
# 7 to 9% faster at nice 0 (docs/engines.md). A value the caller set is kept.
WORKER_NICENESS_ENV = "RAY_worker_niceness"

# What Ray, Python and the engines need from the caller's environment. Everything
# else (cloud credentials, other services' tokens) stays out of the head and its
# replicas unless named with `gale cluster up --env NAME`.
KEPT_NAMES = {
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "XDG_CACHE_HOME", "OMP_NUM_THREADS",
}  # fmt: skip
KEPT_PREFIXES = (
    "LC_",
    "GALE_",
    "RAY_",
    "CUDA_",
    "NVIDIA_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH",
    "VLLM_",
)
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "CREDENTIAL")


def head_environment(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The part of `environ` the local head starts with: what Ray and the engines need,
    no secret-looking names (HF_TOKEN, GALE_API_KEY…), plus the names in `extra`."""
    named = set(extra)
    missing = sorted(n for n in named if n not in environ)
    if missing:
        raise UsageError(
            f"--env {', '.join(missing)}: not set in this environment",
            hint="export it first, or drop the --env",
        )

    def kept(name: str) -> bool:
        if name in named:
            return True
        if any(word in name.upper() for word in SECRET_WORDS):
            return False
        return name in KEPT_NAMES or name.startswith(KEPT_PREFIXES)

    return {name: value for name, value in environ.items() if kept(name)}


def _head_env(
    config: ClusterConfig,
    token: str,
    environ: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
) -> dict[str, str]:
    env = head_environment(os.environ if environ is None else environ, extra)
    env["RAY_AUTH_MODE"] = "token"
    if config.token_source == "RAY_AUTH_TOKEN":
        env["RAY_AUTH_TOKEN"] = token
    else:
        # Point Ray at the file rather than copying the token into every process's env.
        env.pop("RAY_AUTH_TOKEN", None)
        env["RAY_AUTH_TOKEN_PATH"] = config.token_source or str(config.token_file)
    return env


def ray_environment(
    config: ClusterConfig,
    token: str,
    extra: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a head or a node that gale starts runs with: `head_environment` of this
    process's environment (or `environ`), the names in `extra`, and Ray's token settings."""
    return _head_env(config, token, environ, extra)


def start_local_head(
    gpus: int = 0,
    accelerator: str | None = None,
    *,
    config: ClusterConfig | None = None,
    timeout: float = START_TIMEOUT_S,
    env: Iterable[str] = (),
) -> LocalHeadStatus:
    """Start the local Ray head (token auth, loopback only) and Serve's HTTP proxy.

    The head starts with a minimal environment (`head_environment`) plus the variables named in `env`.
    """
    config = config or ClusterConfig.from_env()
    if not config.is_local:
        raise UsageError(
            f"GALE_RAY_ADDRESS points at {config.dashboard_url}, not this machine",
            hint="unset GALE_RAY_ADDRESS to start a local head",
        )
    if gpus < 0 or (gpus and not accelerator) or (accelerator and not gpus):
        raise UsageError("declare GPUs with both a count and an accelerator type, e.g. 4 A10G")
    status = local_head_status(config)
    if status.running:
        return status
    head_environment(os.environ, env)  # a bad --env fails before anything starts
    token = ensure_token(config)
    if config.token is None:
        config = config.with_token(token, str(config.token_file))
    config.gale_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    environment = ray_environment(config, token, env)
    every_core = cores.caller_cores()
    core = cores.control_core(every_core)
    if core is not None:
        # Ray's own processes keep to one core; replicas take back every one (serving.cores).
        environment[cores.ENGINE_CORES_ENV] = cores.format_cores(every_core)
    environment.setdefault(WORKER_NICENESS_ENV, "0")
    with cores.kept_to(core):
        result = subprocess.run(
            start_command(config, gpus, accelerator),
            env=environment,
            # Not the caller's directory: replicas must find `serving` as installed.
            cwd=config.gale_home,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ClusterError(f"`ray start --head` failed:\n{tail.replace(token, '***')}")
    with ServeClient(config) as client:
        _wait_for_dashboard(client, timeout)
        # The first PUT starts Serve; its HTTP proxy binds loopback only, on the head
        # alone: the endpoint is the head's address, and a node joined from this same
        # machine would otherwise start a second proxy sharing its port, whose
        # connections break when that node leaves.
        client.put_applications(
            [], http_options=config.serve_http_options(), proxy_location="HeadOnly"
        )
    return local_head_status(config)


def _wait_for_dashboard(client: ServeClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.node_resources()
            client.get_applications()
            return
        except ClusterUnreachable:
            if time.monotonic() > deadline:
                raise
        except ClusterError as exc:  # the Serve API answers 5xx while it starts
            if time.monotonic() > deadline:
                raise ClusterError(f"the local head did not come up: {exc.message}") from None
        time.sleep(0.25)


def stop_local_head() -> bool:
    """Stop the local Ray head (`ray stop` from this environment); False if none ran."""
    result = subprocess.run(
        [str(ray_executable()), "stop"], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ClusterError("`ray stop` failed:\n" + "\n".join(output.splitlines()[-8:]))
    return "Did not find any active Ray processes" not in output


def local_head_status(config: ClusterConfig | None = None) -> LocalHeadStatus:
    """Whether the local head answers, with its total logical resources."""
    config = config or ClusterConfig.from_env()
    resources: dict[str, float] = {}
    running = True
    try:
        with ServeClient(config, timeout=5.0) as client:
            for node in client.node_resources():
                for key, value in node.items():
                    resources[key] = resources.get(key, 0.0) + value
    except ClusterUnreachable:
        running = False
    return LocalHeadStatus(
        running, config.dashboard_url, config.serve_url, resources, config.token_file
    )
