"""What a cluster command works with: connection settings, the Serve client and local state."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gale_cli import output
from gale_cli.cluster import ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.local_head import local_head_status, start_local_head
from gale_cli.state import State


@dataclass
class Session:
    """A connected cluster client and local state, for one command."""

    config: ClusterConfig
    client: ServeClient
    state: State

    def close(self) -> None:
        """Close the cluster connection."""
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def passed_to_head(hub_model: bool, environ: Mapping[str, str]) -> list[str]:
    """Secrets a head started for this command inherits: HF_TOKEN, for a Hub model, if set."""
    return ["HF_TOKEN"] if hub_model and environ.get("HF_TOKEN") else []


def open_session(*, start_local: bool = False, hf_token: bool = False) -> Session:
    """Connect to the configured cluster; with `start_local`, start the embedded default if none runs.

    With `hf_token` (a Hub model is being deployed) a head started here inherits
    HF_TOKEN when it is set, so its replicas can download what the CLI could resolve.
    """
    config = ClusterConfig.from_env()
    embedded = start_local and not os.environ.get("GALE_RAY_ADDRESS") and config.is_local
    if embedded and not local_head_status(config).running:
        output.message("No Ray cluster is running here: starting a local one (`gale cluster up`).")
        start_local_head(config=config, env=passed_to_head(hf_token, os.environ))
        config = ClusterConfig.from_env()
    return Session(config, ServeClient(config), State(config.gale_home / "state.db"))
