"""The Hugging Face Hub: a revision resolved to its commit, and a repo's files fetched once per node.

Everything goes through `huggingface_hub`, which reads `HF_ENDPOINT`, `HF_TOKEN`
(or a token saved by `hf auth login`) and `HF_HOME` itself; `endpoint` and
`token` are seams for tests. The CLI resolves a deployment's revision to a commit
(`resolve_commit`) and pins it in the deployment, so every replica, now or
after a redeploy, downloads the same weights (`download`).

Replicas starting together on one node share the hub cache: `download` holds a
file lock per (repo, commit) while it fetches, and a replica that waited on it
then finds the files there and asks the Hub nothing. huggingface_hub resumes a
download cut mid-file with a range request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from serving.engines.errors import ModelLoadError
from serving.file_lock import locked

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a download advances."""

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files a replica never reads: other frameworks' weights and pickles (which can run code).
SKIPPED_SUFFIXES = (*PICKLED_SUFFIXES, ".h5", ".msgpack", ".onnx", ".onnx_data", ".ot", ".tflite")
TIMEOUT_S = 10.0
_COMPLETE = ".complete"


class HubError(ModelLoadError):
    """The Hub refused a repo or revision; the message names it and says what to do."""


class HubUnreachable(HubError):
    """The Hub did not answer (network, HF_ENDPOINT)."""


def resolve_commit(
    repo: str,
    revision: str | None,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> str:
    """The commit hash `revision` (a branch, tag or commit; None for the default branch) names now."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with _explained(repo, revision):
        info = api.model_info(repo, revision=revision, timeout=TIMEOUT_S)
    if not info.sha:
        raise HubError(f"the Hub gave no commit for {_named(repo, revision)}")
    return info.sha


def weight_files(names: list[str]) -> list[str]:
    """The files of a repo a replica needs: all but other frameworks' weights and pickles."""
    return [name for name in names if not name.endswith(SKIPPED_SUFFIXES)]


def check_weights(repo: str, names: list[str]) -> None:
    """Refuse a repo with no safetensors and no single GGUF file, saying why."""
    if any(name.endswith(".safetensors") for name in names):
        return
    ggufs = [name for name in names if name.endswith(".gguf")]
    if len(ggufs) == 1:
        return
    if ggufs:
        raise HubError(
            f"{repo} holds several .gguf files ({', '.join(sorted(ggufs)[:4])}…); gale loads "
            "one: download the one you want and pass its absolute path"
        )
    raise HubError(
        f"{repo} has no *.safetensors or .gguf weights; gale does not load pickled weights. "
        "Choose a repo with safetensors, or pass a local path to a converted copy"
    )


def download(
    repo: str,
    commit: str,
    *,
    cache_dir: Path | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """The local snapshot folder of `repo` at `commit`, fetched once per cache (node).

    `progress(done, total)` is called with byte counts as files arrive (and once
    at the end); files already in the cache count as done.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    storage = cache / repo_folder_name(repo_id=repo, repo_type="model")
    snapshot = storage / "snapshots" / commit
    # huggingface_hub keeps its own locks under .locks, a folder its cache scan skips.
    locks = cache / ".locks" / "gale"
    locks.mkdir(parents=True, exist_ok=True)
    marker = locks / f"{storage.name}-{commit}{_COMPLETE}"
    with locked(locks / f"{storage.name}-{commit}.lock"):
        if marker.exists() and snapshot.is_dir():
            return _done(snapshot, progress)
        api = HfApi(endpoint=endpoint, token=token)
        try:
            with _explained(repo, commit):
                listing = [
                    entry
                    for entry in api.list_repo_tree(repo, revision=commit, recursive=True)
                    if hasattr(entry, "size")
                ]
        except HubError:
            # Offline, but perhaps fetched before by other means (`hf download`).
            cached = _cached_snapshot(repo, commit, cache)
            if cached is None:
                raise
            return _done(cached, progress)
        names = [entry.path for entry in listing]
        check_weights(repo, names)
        wanted = [entry for entry in listing if entry.path in weight_files(names)]
        counter = _Counter(sum(int(entry.size) for entry in wanted), progress)
        for entry in wanted:
            before = counter.done
            with _explained(repo, commit):
                hf_hub_download(
                    repo,
                    entry.path,
                    revision=commit,
                    cache_dir=cache,
                    token=token,
                    endpoint=endpoint,
                    tqdm_class=counter.bar_class(),  # type: ignore[arg-type]
                )
            # A file found in the cache made no progress bar: count it now.
            counter.add(int(entry.size) - (counter.done - before))
        marker.touch()
        return snapshot


class _Counter:
    """Bytes done across a snapshot's files, fed by huggingface_hub's per-file progress bars."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def add(self, n: int) -> None:
        if n:
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)

    def bar_class(self) -> type:
        counter = self

        class Bar:
            """Enough of tqdm's interface for huggingface_hub's `http_get`."""

            def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
                counter.add(int(initial or 0))  # bytes of an earlier, interrupted attempt

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, n: float | None = 1) -> None:
                counter.add(int(n or 0))

            def close(self) -> None:
                return None

        return Bar


def _done(snapshot: Path, progress: Progress | None) -> Path:
    if progress:
        total = sum(path.stat().st_size for path in snapshot.rglob("*") if path.is_file())
        progress(total, total)
    return snapshot


def _cached_snapshot(repo: str, commit: str, cache: Path) -> Path | None:
    """A complete snapshot of `repo` at `commit` already in the cache, without the network."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(repo, revision=commit, cache_dir=cache, local_files_only=True)
        )
    except Exception:  # not there, or incomplete: huggingface_hub says which, we need neither
        return None
    names = [path.name for path in folder.iterdir()]
    return folder if any(n.endswith((".safetensors", ".gguf")) for n in names) else None


def _named(repo: str, revision: str | None) -> str:
    return f"{repo}@{revision}" if revision else repo


@contextlib.contextmanager
def _explained(repo: str, revision: str | None) -> Iterator[None]:
    """Turn huggingface_hub's errors into HubError messages that say what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    named = _named(repo, revision)
    try:
        yield
    except GatedRepoError:
        raise HubError(
            f"{repo} is gated: accept its terms on the Hub with your account, then set HF_TOKEN "
            "(a token of that account) where gale runs and on the cluster's nodes "
            "(see the README, 'Hugging Face tokens')"
        ) from None
    except RevisionNotFoundError:
        raise HubError(
            f"{named}: the revision does not exist; give a branch, tag or commit of {repo}"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{repo}: no such model repo on the Hub (or it is private and HF_TOKEN does not "
            "open it); check the name, or set HF_TOKEN"
        ) from None
    except EntryNotFoundError as error:
        raise HubError(f"{named}: a file is missing on the Hub ({error})") from None
    except HfHubHTTPError as error:
        raise HubError(f"the Hub refused {named} ({_first_line(error)}); try again later") from None
    except OSError as error:
        # Connection refused, DNS, timeouts (httpx errors are not OSErrors: see below).
        raise HubUnreachable(_unreachable(named, error)) from None
    except Exception as error:
        if type(error).__module__.startswith(("httpx", "httpcore")):
            raise HubUnreachable(_unreachable(named, error)) from None
        raise


def _unreachable(named: str, error: Exception) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return (
        f"could not reach the Hugging Face Hub at {endpoint} for {named} "
        f"({type(error).__name__}: {_first_line(error)}); check the network or HF_ENDPOINT, "
        "or pass an absolute local path to the model instead"
    )


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]
