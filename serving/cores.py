"""On a local head, Ray's own processes keep to one core and the engines get the others.

A local head runs the cluster's whole control plane beside the model: the GCS,
raylet, dashboard and its agent, Serve's controller and proxy, the ingress and
the ledger. On a small machine they take about a fifth of a core between them,
and spread over every core they interrupt the engine's compute threads, which
wait for each other at every step. So `gale cluster up` starts Ray on the last
core (the one vLLM's CPU build keeps back for its scheduler when it binds its
threads, `VLLM_CPU_OMP_THREADS_BIND=auto`), and names every core the caller had
in `ENGINE_CORES_ENV`. A model replica gives all of them back to itself before it
loads its engine (`take_engine_cores`), so the engine, and any server it starts,
sees every core as before. A replica on a cluster gale did not start finds no
such variable and leaves its cores as Ray gave them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator

logger = logging.getLogger("ray.serve")

# Every core the local head's caller could use, as a list ("0,1"): the replicas' cores.
ENGINE_CORES_ENV = "GALE_ENGINE_CORES"


def caller_cores() -> set[int]:
    """The cores this process may run on (every core where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def control_core(cores: Iterable[int]) -> int | None:
    """The core Ray's own processes keep to: the last of `cores`; None with fewer than 2."""
    ordered = sorted(cores)
    return ordered[-1] if len(ordered) >= 2 else None


def format_cores(cores: Iterable[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def parse_cores(text: str) -> set[int]:
    """The cores a `format_cores` list names; empty for anything else."""
    try:
        return {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        return set()


@contextlib.contextmanager
def kept_to(core: int | None) -> Iterator[None]:
    """Run the block with this thread on `core` alone, so processes it starts inherit that.

    None leaves the thread as it is. Affinity is per thread, so other threads of this
    process are not affected; the thread's own cores come back when the block ends.
    """
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def take_engine_cores(environ: dict[str, str] | os._Environ[str] = os.environ) -> set[int]:
    """Give every thread of this process the cores `ENGINE_CORES_ENV` names; those cores.

    Affinity belongs to each thread, and threads and processes started later inherit
    it from the one that starts them, so every thread running now gets the cores.
    Returns the empty set (and changes nothing) when the variable is absent or names
    no core this machine has.
    """
    wanted = parse_cores(environ.get(ENGINE_CORES_ENV, ""))
    if not wanted or not hasattr(os, "sched_setaffinity"):
        return set()
    threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    try:
        os.sched_setaffinity(0, wanted)
    except OSError as error:
        logger.warning("gale: could not take cores %s: %s", format_cores(wanted), error)
        return set()
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, wanted)
    return wanted
