"""llama.cpp's own server as a child of the replica: finding it, sizing it, starting it.

The llama.cpp engine (`serving.engines.llamacpp_engine`) runs `llama-server`,
built by `make install` from the llama.cpp source that `llama-cpp-python`
vendors, on a loopback port. Its parallel slots are the batch size (llama.cpp
batches every running slot in one decode step), its KV cache is sized from the
profile's memory, and its threads are the replica's CPUs. Weights stay quantized:
the GGUF file is mapped as it is.

The KV cache is split into one region per slot when the memory gives every slot
at least `PER_SLOT_MIN_TOKENS` (or the model's whole context, if shorter): a
token's attention then reads only its own request's cache. Otherwise the slots
share one pool (`--kv-unified`), where a long request can use what others leave,
but every token's attention runs over the whole pool: measured on the bundled
model at 64 requests at once, 499 tokens/s split against 186 shared (AMX build,
docs/engines.md). A split cache caps each request at its slot's share: the
engine's context length says so, and a longer request gets a 400 naming it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from serving.engines.errors import ModelLoadError

if TYPE_CHECKING:
    from serving.catalog import HardwareProfile

GIB = 1024**3
SERVER_ENV = "GALE_LLAMA_SERVER"
"""A llama-server binary to use instead of the one `make install` builds."""
# Memory a replica keeps for the API, the tokenizer and llama.cpp's compute buffers
# (the vLLM engine keeps the same).
RUNTIME_GB = 2.0
MIN_KV_CACHE_GB = 0.25
PER_SLOT_MIN_TOKENS = 1024
"""The least context a slot's own KV region may hold; below it the slots share one pool."""
START_TIMEOUT_S = 300.0
SPIN_COUNT = 10_000
"""Spins of an OpenMP thread waiting at a barrier before it sleeps (see `server_env`)."""


def server_binary() -> Path | None:
    """The llama-server binary: $GALE_LLAMA_SERVER, else the one in this environment's bin/."""
    named = os.environ.get(SERVER_ENV)
    if named:
        return Path(named) if Path(named).is_file() else None
    found = Path(sys.prefix) / "bin" / "llama-server"
    return found if found.is_file() else None


def require_server_binary() -> Path:
    """The llama-server binary, or a ModelLoadError saying how to build it."""
    found = server_binary()
    if found is None:
        raise ModelLoadError(
            "the llama.cpp engine needs llama-server, which `make install` builds into "
            f"{Path(sys.prefix) / 'bin'} (or set {SERVER_ENV} to a llama-server binary)"
        )
    return found


@dataclass(frozen=True)
class GGUFShape:
    """What sizing the KV cache needs from a GGUF file's metadata."""

    context_length: int
    kv_bytes_per_token: int
    """f16 keys and values of one token across all layers."""


def gguf_shape(path: str) -> GGUFShape:
    """Read the trained context length and the KV size per token from a GGUF header."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> int | None:
        field = reader.fields.get(key)
        if field is None or not field.data:
            return None
        return int(field.parts[field.data[0]][0])

    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    layers = value(f"{arch}.block_count") or 1
    heads = value(f"{arch}.attention.head_count") or 1
    kv_heads = value(f"{arch}.attention.head_count_kv") or heads
    width = value(f"{arch}.embedding_length") or 0
    key_dim = value(f"{arch}.attention.key_length") or width // heads
    value_dim = value(f"{arch}.attention.value_length") or key_dim
    per_token = layers * kv_heads * (key_dim + value_dim) * 2
    return GGUFShape(value(f"{arch}.context_length") or 4096, max(1, per_token))


@dataclass(frozen=True)
class ServerSettings:
    """What llama-server is started with, derived from the profile and this replica."""

    parallel: int
    """Slots: requests decoded together (the batch size)."""
    context_size: int
    """Tokens of KV cache of all slots together."""
    threads: int
    unified: bool = True
    """One pool shared by the slots; else each slot has context_size / parallel of its own."""

    @property
    def per_request(self) -> int:
        """The most tokens (prompt and answer) one request may hold."""
        return self.context_size if self.unified else self.context_size // self.parallel


def server_settings(
    profile: HardwareProfile | None,
    shape: GGUFShape,
    weights_bytes: int,
    parallel: int,
    context_length: int | None,
    kv_cache_gb: float | None = None,
) -> ServerSettings:
    """Slots from the batch size, a shared KV cache from the profile's memory (or
    `kv_cache_gb`), threads from the replica's CPUs (Ray sets OMP_NUM_THREADS to its
    num_cpus)."""
    memory = profile.memory_gb if profile is not None else 4.0
    kv_gb = kv_cache_gb or max(MIN_KV_CACHE_GB, memory - weights_bytes / GIB - RUNTIME_GB)
    budget = int(kv_gb * GIB // shape.kv_bytes_per_token)
    per_request = min(context_length or shape.context_length, shape.context_length)
    # Every slot could hold a whole context; the profile's memory caps the pool.
    size = max(256, min(per_request * parallel, int(budget)))
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = int(os.environ.get("OMP_NUM_THREADS") or allowed or 1)
    split = parallel > 1 and size // parallel >= min(per_request, PER_SLOT_MIN_TOKENS)
    return ServerSettings(
        parallel=parallel, context_size=size, threads=max(1, threads), unified=not split
    )


def server_command(binary: Path, model: str, port: int, settings: ServerSettings) -> list[str]:
    """The llama-server command line for a model file on a loopback port."""
    return [
        str(binary),
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(settings.parallel),
        "--ctx-size",
        str(settings.context_size),
        "--kv-unified" if settings.unified else "--no-kv-unified",
        "--cont-batching",
        "--threads",
        str(settings.threads),
        "--threads-batch",
        str(settings.threads),
        "--batch-size",
        "2048",
        "--ubatch-size",
        "512",
        # Weights read into the server's memory rather than mapped: the AMX build repacks
        # most of them into its own layout, and a mapped file would keep the original
        # pages resident beside the copy (bundled model: 497 MB resident mapped, 432 read).
        "--load-mode",
        "none",
        # No prompt cache in host RAM beyond the KV cache (llama.cpp's default keeps 8 GiB).
        "--cache-ram",
        "0",
        "--no-webui",
    ]


def server_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment llama-server starts with: the replica's, and a short OpenMP spin.

    llama.cpp's OpenMP threads meet at a barrier after every operation of a step,
    hundreds of times per token. A thread that sleeps at once (`OMP_WAIT_POLICY=
    PASSIVE`) pays a wake-up at each, and a thread that spins without end holds a
    core Ray's processes and other replicas need. `GOMP_SPINCOUNT` spins that many
    times, then sleeps: measured on the bundled model through a 2-core local head,
    about 6 times the tokens/s of passive at one request and 1.5 to 2 times at 8 to
    64 (docs/engines.md). An `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` set in the
    replica's environment is kept.
    """
    env = dict(environ)
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    return env


class ServerProcess:
    """A running llama-server: its port and its log; `stop()` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self.log.unlink()


def start_server(binary: Path, model: str, settings: ServerSettings) -> ServerProcess:
    """Start llama-server and wait until it answers /health (loading takes seconds)."""
    import httpx

    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="gale-llama-server-", suffix=".log")[1])
    with log.open("wb") as out:
        process = _spawn(server_command(binary, model, port, settings), server_env(), out)
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise ModelLoadError(f"llama-server exited with code {process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    tail = server.log_tail()
    server.stop()
    raise ModelLoadError(f"llama-server did not become ready in {START_TIMEOUT_S:.0f} s:\n{tail}")


def _spawn(command: list[str], env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start `command` from a thread that lives as long as it does.

    The child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so no
    server outlives its replica however the replica ends; "parent" there is the thread
    that started it, so that thread must not end first (a pool thread could).
    """
    started: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()

    def keep() -> None:
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except BaseException as error:
            started.set_exception(error)
            return
        started.set_result(process)
        process.wait()

    threading.Thread(target=keep, name="gale-llama-server", daemon=True).start()
    return started.result()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # In the child before exec: the kernel ends it when the thread that started it ends.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
