"""A deployment's Hugging Face revision, resolved to a commit when it is deployed and kept.

The CLI asks the Hub (through huggingface_hub, with `HF_ENDPOINT` and `HF_TOKEN`
from this environment) which commit a branch or tag names now, and writes it into
the spec's `model_commit`; replicas download exactly that commit, so a redeploy,
a new replica or a replacement on another node serves the same weights. A
redeploy keeps the pin unless the model is given again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gale_cli.errors import GaleError, UsageError
from serving.spec import COMMIT, DeploymentSpec

Resolver = Callable[[str, str | None], str]


def hub_repo(spec: DeploymentSpec) -> tuple[str, str | None] | None:
    """(repo, revision) when the spec's model comes from the Hub, else None."""
    ref = spec.model_ref
    if ref.kind == "hf":
        return ref.value, ref.revision
    entry = ref.catalog_entry
    if entry is not None and entry.source.repo:
        return entry.source.repo, entry.source.revision
    return None


def pin(spec: DeploymentSpec, resolver: Resolver | None = None) -> DeploymentSpec:
    """The spec with `model_commit` set: kept if already set, else resolved on the Hub now."""
    found = hub_repo(spec)
    if found is None or spec.model_commit:
        return spec
    repo, revision = found
    if revision and COMMIT.match(revision):
        commit = revision
    else:
        commit = (resolver or resolve_on_hub)(repo, revision)
    return spec.model_copy(update={"model_commit": commit})


def redeploy_values(current: DeploymentSpec, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The values a redeploy validates: the live spec, its pin dropped when the model is given."""
    values: dict[str, Any] = {**current.model_dump(), **changes}
    if "model" in changes and "model_commit" not in changes:
        values["model_commit"] = None  # asked for the model again: resolve its revision anew
    return values


def resolve_on_hub(repo: str, revision: str | None) -> str:
    """The commit `revision` of `repo` names now; exit 2 for a bad repo, 1 for no Hub."""
    from serving.hub import HubError, HubUnreachable, resolve_commit

    try:
        return resolve_commit(repo, revision)
    except HubUnreachable as error:
        raise GaleError(str(error), hint=_HINT) from None
    except HubError as error:
        raise UsageError(str(error), hint=_HINT) from None


_HINT = (
    "gale asks the Hub which commit the revision names, so every replica gets the same "
    "weights; pin one yourself with --model-commit, or write hf:ORG/NAME@<commit>"
)
