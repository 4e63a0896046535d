"""The client side of the cluster: Ray Serve's REST API on the dashboard.

Only httpx and the standard library here (no ray): `gale --help` must stay fast.
Starting and stopping the embedded local head lives in `gale_cli.local_head`.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from gale_cli.connection import ClusterConfig
from gale_cli.errors import (
    AuthError,
    ClusterError,
    ClusterUnreachable,
    DeployFailed,
    DeployTimeout,
    UsageError,
)
from gale_cli.progress import Progress, messages, progress_of, timeout_error
from serving import serve_config

USER_AGENT = "gale-cli/0.1 (httpx)"  # never "Mozilla": Ray refuses browser-like requests
APPS_PATH = "/api/serve/applications/"
NODES_PATH = "/api/v0/nodes"
VERSION_PATH = "/api/version"
# Deployment statuses in which every replica runs the latest config.
STEADY = {"HEALTHY", "UPSCALING", "DOWNSCALING"}
WRITE_ATTEMPTS = 4
LOCK_WAIT_S = 60.0
# A second look after each write: a stale PUT from another machine lands within this.
VERIFY_DELAY_S = 0.5
UP_HINT = "start one with `gale cluster up` or set GALE_RAY_ADDRESS"
TOKEN_HINT = (
    "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token; "
    "a head started by `gale cluster up` keeps it in GALE_HOME/ray-token"
)


@dataclass(frozen=True)
class Applied:
    """What `apply_application` replaced, so a caller can wait for the new revision."""

    name: str
    previous: dict[str, Any] | None
    previous_deploy_time: float | None


class ServeClient:
    """Ray Serve's declarative REST API on the dashboard, with gale's read-merge-write."""

    def __init__(
        self,
        config: ClusterConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        verify_delay: float = VERIFY_DELAY_S,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or ClusterConfig.from_env()
        self.verify_delay = verify_delay
        self._warn = warn or _warn
        self._probed = False
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        self._http = httpx.Client(
            base_url=self.config.dashboard_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,  # a proxy from the environment must not see the token
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP -----------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        token = self.config.token
        return text.replace(token, "***") if token else text

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.config.dashboard_url
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ClusterError(
                f"the Ray dashboard at {url} did not answer {method} {path} in time "
                f"({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            hint = UP_HINT if self.config.is_local else "check GALE_RAY_ADDRESS and the cluster"
            reason = self._scrub(str(exc)) or type(exc).__name__
            raise ClusterUnreachable(
                f"cannot reach the Ray dashboard at {url}: {reason}", hint=hint
            ) from None
        if response.status_code == 401:
            raise AuthError(
                f"the Ray dashboard at {url} requires a token and gale has none", hint=TOKEN_HINT
            )
        if response.status_code == 403:
            raise AuthError(
                f"the Ray dashboard at {url} refused gale's token "
                f"(from {self.config.token_source})",
                hint=TOKEN_HINT,
            )
        if response.status_code >= 400:
            body = self._scrub(response.text.strip())[:2000]
            raise ClusterError(
                f"the Ray dashboard at {url} answered {response.status_code} to "
                f"{method} {path}: {body or response.reason_phrase}"
            )
        return response

    def get_applications(self) -> dict[str, Any]:
        """Serve's instance details: every application with status, config and replicas."""
        response = self._request("GET", APPS_PATH)
        try:
            details = response.json()
        except ValueError:
            raise ClusterError(
                f"{self.config.dashboard_url}{APPS_PATH} did not answer JSON; "
                "is this a Ray dashboard?"
            ) from None
        details.setdefault("applications", {})
        if not self._probed:
            self._probed = True
            self._check_door()
        return details

    def _check_door(self) -> None:
        """Warn once when the dashboard answers Serve's API to a request without the token."""
        request = self._http.build_request("GET", APPS_PATH)
        request.headers.pop("Authorization", None)
        try:
            open_door = self._http.send(request).status_code == 200
        except httpx.HTTPError:
            return
        if open_door:
            self._warn(
                f"the Ray dashboard at {self.config.dashboard_url} answers without a token: "
                "anyone who can reach it can run code on the cluster. Start Ray with "
                "RAY_AUTH_MODE=token (`gale cluster up` does)."
            )

    def get_application(self, name: str) -> dict[str, Any] | None:
        """One application's details, or None when the cluster has none of that name."""
        return self.get_applications()["applications"].get(name)

    def put_applications(self, applications: list[dict[str, Any]], **options: Any) -> None:
        """Replace the whole declarative config: `applications` plus top-level options."""
        body = {**{k: v for k, v in options.items() if v is not None}, "applications": applications}
        # Starting Serve on the first PUT can take a while.
        self._request("PUT", APPS_PATH, json=body, timeout=120.0)

    def session_name(self) -> str | None:
        """The Ray session of the cluster (new each time a cluster starts), or None if unknown."""
        try:
            name = self._request("GET", VERSION_PATH).json().get("session_name")
        except (ClusterError, ValueError, AttributeError):
            return None
        return str(name) if name else None

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the cluster has known, alive or lost (Ray's State API rows)."""
        payload = self._request("GET", NODES_PATH, params={"detail": "1"}).json()
        return list(payload.get("data", {}).get("result", {}).get("result", []))

    def node_resources(self) -> list[dict[str, float]]:
        """Total logical resources of each alive node (Ray's State API)."""
        payload = self._request("GET", NODES_PATH, params={"detail": "1"}).json()
        rows = payload.get("data", {}).get("result", {}).get("result", [])
        return [row.get("resources_total", {}) for row in rows if row.get("state") == "ALIVE"]

    def node_ids(self) -> list[str]:
        """The ids of the alive nodes (Ray's State API)."""
        payload = self._request("GET", NODES_PATH, params={"detail": "1"}).json()
        rows = payload.get("data", {}).get("result", {}).get("result", [])
        return [row["node_id"] for row in rows if row.get("state") == "ALIVE" and "node_id" in row]

    def list_log_files(self, node_id: str, glob: str) -> list[str]:
        """Files in a node's Ray log folder matching `glob` (relative paths, as `log_file` takes)."""
        params = {"node_id": node_id, "glob": glob}
        payload = self._request("GET", "/api/v0/logs", params=params).json()
        groups = (payload.get("data") or {}).get("result") or {}
        return sorted({name for names in groups.values() for name in names})

    # -- read, merge, write -----------------------------------------------------

    @contextlib.contextmanager
    def _config_lock(self) -> Iterator[None]:
        """Serialize gale's read-modify-write of the cluster config on this machine."""
        self.config.gale_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.config.gale_home / "serve-config.lock"
        # Owner-only even in a GALE_HOME that already existed with wider permissions.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "a") as handle:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            "another gale command has been changing the cluster's Serve "
                            f"config for over {LOCK_WAIT_S:.0f}s; try again when it ends"
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _options(self, details: dict[str, Any]) -> dict[str, Any]:
        """Top-level settings to send back unchanged (loopback HTTP on the local head)."""
        options = {
            key: details.get(key)
            for key in ("proxy_location", "http_options", "grpc_options", "target_capacity")
        }
        if self.config.is_local:
            options["http_options"] = {
                **(options["http_options"] or {}),
                **self.config.serve_http_options(),
            }
        return options

    def _update(
        self,
        change: Callable[[dict[str, dict[str, Any]], dict[str, Any]], list[dict[str, Any]]],
        holds: Callable[[dict[str, dict[str, Any]]], bool],
    ) -> dict[str, Any]:
        """Read the declarative apps, let `change` rewrite them, PUT, and check that it `holds`.

        `change` always works from the config read in this attempt, so a retry
        recomputes it from what another machine wrote meanwhile.
        """
        with self._config_lock():
            for _ in range(WRITE_ATTEMPTS):
                details = self.get_applications()
                apps = _declarative(details)
                new_apps = change(apps, details["applications"])
                # Ray has no compare-and-swap: re-read just before writing, and start
                # over if another client changed the config in between.
                if _declarative(self.get_applications()) != apps:
                    continue
                self.put_applications(new_apps, **self._options(details))
                # Another machine's PUT of what it read before ours reverts this write:
                # look again (now and a moment later) and redo the change if it is gone.
                if holds(_declarative(self.get_applications())) and (
                    not self.verify_delay or self._holds_later(holds)
                ):
                    return details
        raise ClusterError(
            f"the cluster's Serve config changed during each of {WRITE_ATTEMPTS} attempts "
            "to update it; another client is deploying, try again"
        )

    def _holds_later(self, holds: Callable[[dict[str, dict[str, Any]]], bool]) -> bool:
        time.sleep(self.verify_delay)
        return holds(_declarative(self.get_applications()))

    def modify_application(
        self,
        name: str,
        edit: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        holds: Callable[[dict[str, Any] | None], bool] | None = None,
    ) -> Applied:
        """Change one gale application from its live config, inside the lock.

        `edit` gets the application's config as the cluster has it now (None when
        absent) and returns the new one (None removes it); it runs again on each
        retry, so a change is always made to the latest config, never to an older read.
        `holds` says whether the change is still in effect in a config read back after
        the write (by default: the application reads back as written); when it is
        not, another machine's write reverted it and the change is made again.
        """
        seen: dict[str, Any] = {}

        def change(apps: dict[str, dict[str, Any]], live: dict[str, Any]) -> list[dict[str, Any]]:
            current = apps.get(name)
            foreign = current is not None and not serve_config.is_gale_application(
                current["config"]
            )
            new = None if foreign else edit(copy.deepcopy(current["config"]) if current else None)
            if foreign and edit(None) is not None:
                # Removing it is allowed (as before); replacing it never.
                raise ClusterError(
                    f"the cluster already runs an application named '{name}' that gale "
                    "did not deploy; choose another name"
                )
            _refuse_imperative(name, live, "replace" if new is not None else "remove")
            seen.update(previous=current, written=new)
            others = [app["config"] for key, app in apps.items() if key != name]
            return [*others, new] if new is not None else others

        def still(apps: dict[str, dict[str, Any]]) -> bool:
            live = apps[name]["config"] if name in apps else None
            if holds is not None:
                return holds(live)
            written = seen.get("written")
            return live is None if written is None else live is not None and _same(live, written)

        existing = self._update(change, still)["applications"].get(name)
        previous = seen.get("previous")
        return Applied(
            name,
            previous["config"] if previous else None,
            existing.get("last_deployed_time_s") if existing else None,
        )

    def apply_application(self, app_config: dict[str, Any], *, create: bool = False) -> Applied:
        """Deploy or update one gale application, keeping every other application as is.

        With `create`, only a new application: one of that name already there is a
        UsageError (unless it is this very one, written by an earlier attempt).
        """
        name = app_config["name"]
        ours = _key_ids(app_config)

        def edit(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if create and current is not None:
                if ours and ours <= _key_ids(current):
                    return current  # this command's own earlier write: keep what is there
                raise UsageError(
                    f"a deployment named '{name}' already exists",
                    hint=f"change it with `gale redeploy {name}`, or choose another --name",
                )
            return app_config

        def holds(live: dict[str, Any] | None) -> bool:
            if live is None:
                return False
            return ours <= _key_ids(live) if create and ours else _same(live, app_config)

        return self.modify_application(name, edit, holds)

    def remove_application(self, name: str) -> bool:
        """Remove one application, keeping every other; False when it was not there."""
        return self.modify_application(name, lambda current: None).previous is not None

    # -- waiting ---------------------------------------------------------------

    def wait_for_application(
        self,
        name: str,
        timeout: float,
        on_update: Callable[[Progress], None] | None = None,
        *,
        since: float | None = None,
        poll_interval: float = 1.0,
        observe: Callable[[dict[str, Any]], Progress] | None = None,
        every_poll: bool = False,
    ) -> dict[str, Any]:
        """Poll until `name` is RUNNING (deployed after `since`, if given); return its details.

        `observe` turns the application's details into a Progress (by default
        `progress_of`); `on_update` gets it when it changes, or on `every_poll`.
        """
        deadline = time.monotonic() + timeout
        last: Progress | None = None
        while True:
            app = self.get_application(name)
            fresh = app is not None and (
                since is None or (app.get("last_deployed_time_s") or 0) > since
            )
            if app is not None and fresh and app.get("status") == "RUNNING":
                return app
            if app is not None and fresh and app.get("status") == "DEPLOY_FAILED":
                raise DeployFailed(
                    f"'{name}' failed to deploy: {messages(app)}",
                    hint=f"see the replica logs with `ray logs` or in the dashboard at "
                    f"{self.config.dashboard_url}",
                )
            if app and fresh:
                progress = observe(app) if observe else progress_of(app, self.node_resources)
            else:
                progress = Progress("PENDING")
            if (every_poll or progress != last) and on_update is not None:
                on_update(progress)
            last = progress
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timeout_error(name, timeout, progress)
            time.sleep(min(poll_interval, remaining))

    def wait_for_update(
        self, name: str, since: float | None, timeout: float, *, poll_interval: float = 0.5
    ) -> list[str]:
        """Poll until every replica of `name` runs the config deployed after `since`.

        Return nothing then; at the timeout, one line per replica that may still run an
        older config (and why). Serve applies a key change through `reconfigure()`;
        until the deployment is back to a steady status, some replica may not have it.
        """
        deadline = time.monotonic() + timeout
        while True:
            app = self.get_application(name)
            if app is None or app.get("status") == "DELETING":
                return []  # nothing serves it any more
            deployment = app.get("deployments", {}).get(serve_config_deployment(), {})
            replicas = deployment.get("replicas", [])
            fresh = (app.get("last_deployed_time_s") or 0) > (since or 0)
            settled = deployment.get("status") in STEADY and app.get("status") == "RUNNING"
            if fresh and settled and all(r.get("state") != "UPDATING" for r in replicas):
                return []
            if time.monotonic() > deadline:
                why = f"the deployment is {deployment.get('status') or app.get('status')}"
                message = deployment.get("message") or app.get("message")
                if message:
                    why += f": {message}"
                lagging = [r for r in replicas if r.get("state") != "STARTING"] or replicas
                return [
                    f"replica {r.get('replica_id', '?')} (pid {r.get('pid', '?')}, "
                    f"{r.get('state', '?')}) may still have the old keys; {why}"
                    for r in lagging
                ] or [f"'{name}' has not confirmed the change; {why}"]
            time.sleep(poll_interval)

    def wait_for_removal(self, name: str, timeout: float, *, poll_interval: float = 1.0) -> None:
        """Poll until the cluster no longer lists `name`."""
        deadline = time.monotonic() + timeout
        while self.get_application(name) is not None:
            if time.monotonic() > deadline:
                raise DeployTimeout(f"'{name}' was still being deleted after {timeout:g}s")
            time.sleep(poll_interval)

    def prometheus_targets(self) -> list[list[str]]:
        """The metrics endpoints (host:port) the dashboard lists, grouped as it groups them."""
        groups = self._request("GET", "/api/prometheus/sd").json()
        return [list(group.get("targets", [])) for group in groups]

    def log_file(self, node_id: str, filename: str, lines: int) -> str:
        """The last `lines` lines of a file in a node's Ray log directory (the dashboard's log API)."""
        params = {"node_id": node_id, "filename": filename, "lines": str(lines)}
        return self._request("GET", "/api/v0/logs/file", params=params, timeout=60.0).text

    def follow_log(self, node_id: str, filename: str, lines: int) -> Iterator[str]:
        """The file's last `lines` lines, then each new line as it is written, until closed."""
        params = {"node_id": node_id, "filename": filename, "lines": str(lines), "interval": "0.5"}
        with self._http.stream("GET", "/api/v0/logs/stream", params=params, timeout=None) as reply:
            if reply.status_code >= 400:
                body = self._scrub(reply.read().decode(errors="replace").strip())[:2000]
                raise ClusterError(
                    f"the Ray dashboard answered {reply.status_code} to the log stream of "
                    f"{filename}: {body or reply.reason_phrase}"
                )
            yield from reply.iter_lines()


def _declarative(details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Applications a PUT must carry, by name, with the config and time they were deployed."""
    apps: dict[str, dict[str, Any]] = {}
    for name, app in details.get("applications", {}).items():
        config = app.get("deployed_app_config")
        # Imperative apps are not part of the declarative config; deleting ones are
        # on their way out and must not be resurrected.
        if app.get("source") == "imperative" or config is None or app.get("status") == "DELETING":
            continue
        if '"<redacted>"' in json.dumps(config):
            raise ClusterError(
                f"the dashboard hid secrets in application '{name}'; gale will not write "
                "them back (is a proxy adding browser headers?)"
            )
        apps[name] = {"config": config, "deployed": app.get("last_deployed_time_s")}
    return apps


def serve_config_deployment() -> str:
    """The name of the model's deployment in each gale application."""
    return serve_config.DEPLOYMENT_NAME


def _warn(text: str) -> None:
    from gale_cli import output

    output.message(f"Warning: {text}", style="yellow")


def _key_ids(config: dict[str, Any]) -> set[str]:
    """The ids of the API keys in a gale application config."""
    try:
        rows = serve_config.model_config(config)["user_config"]["api_keys"]
        return {str(row["id"]) for row in rows}
    except (KeyError, IndexError, TypeError):
        return set()


def _same(live: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether two application configs say the same (gale's compared as spec and keys)."""
    if live == expected:
        return True
    if not (serve_config.is_gale_application(live) and serve_config.is_gale_application(expected)):
        return False
    try:
        return serve_config.from_serve_application(live) == serve_config.from_serve_application(
            expected
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def _refuse_imperative(name: str, live: dict[str, Any], verb: str) -> None:
    if (live.get(name) or {}).get("source") == "imperative":
        raise ClusterError(
            f"'{name}' was deployed with serve.run, not a config; gale will not {verb} it"
        )
