"""Reading gale's replica metrics from the cluster's Prometheus endpoints.

Every Ray node serves its metrics (gale's among them, with Ray's `ray_` prefix)
in Prometheus text on its metrics export port. The dashboard does not proxy
them; it lists them, at `/api/prometheus/sd` (Prometheus HTTP service
discovery), so gale finds the targets through the same address and token as
every other command and then reads each one. Where the nodes' addresses are not
reachable from here (a private network), set `GALE_METRICS_URL` to the
endpoints to read instead (comma-separated, e.g. a Prometheus federation URL).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from gale_cli.cluster import USER_AGENT, ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.errors import ClusterError

METRICS_URL_ENV = "GALE_METRICS_URL"
PREFIXES = ("ray_gale_", "gale_")


@dataclass(frozen=True)
class Sample:
    """One sample of a gale metric, named without Ray's prefix and a counter's `_total`."""

    name: str
    labels: Mapping[str, str]
    value: float


def metrics_urls_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The endpoints named by GALE_METRICS_URL, or none (then discovered via the dashboard)."""
    env = os.environ if environ is None else environ
    text = env.get(METRICS_URL_ENV, "")
    return [url.strip() for url in text.split(",") if url.strip()]


def parse_samples(text: str) -> list[Sample]:
    """gale's samples in one Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    found: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for prefix in PREFIXES:
                if sample.name.startswith(prefix):
                    name = sample.name.removeprefix("ray_").removesuffix("_total")
                    found.append(Sample(name, dict(sample.labels), float(sample.value)))
                    break
    return found


class MetricsReader:
    """Finds the cluster's metrics endpoints and reads gale's samples from all of them."""

    def __init__(
        self,
        config: ClusterConfig | None = None,
        *,
        urls: list[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.config = config or ClusterConfig.from_env()
        self._urls = urls if urls is not None else metrics_urls_from_env()
        self._serve = ServeClient(self.config, transport=transport, timeout=timeout)
        # No token here: the endpoints are the nodes' own, not the dashboard.
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        """Close the HTTP connection pools."""
        self._serve.close()
        self._http.close()

    def __enter__(self) -> MetricsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def endpoints(self) -> list[str]:
        """The metrics URLs to read: GALE_METRICS_URL's, else those the dashboard lists."""
        if self._urls:
            return list(self._urls)
        groups = self._serve.prometheus_targets()
        return [f"http://{target}/metrics" for group in groups for target in group]

    def texts(self) -> list[str]:
        """The Prometheus text of every endpoint; one that does not answer is skipped."""
        endpoints = self.endpoints()
        texts: list[str] = []
        failed: list[str] = []
        for url in endpoints:
            try:
                response = self._http.get(url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                failed.append(f"{url} ({type(exc).__name__})")
                continue
            texts.append(response.text)
        if endpoints and len(failed) == len(endpoints):
            raise ClusterError(
                "could not read metrics from any endpoint: " + ", ".join(failed),
                hint=f"set {METRICS_URL_ENV} to a metrics URL reachable from here",
            )
        return texts

    def samples(self) -> list[Sample]:
        """gale's samples from every endpoint."""
        return [sample for text in self.texts() for sample in parse_samples(text)]
