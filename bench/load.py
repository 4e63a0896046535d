"""Bounded load: closed-loop clients against the HTTP endpoint or an engine in-process.

Every loop stops by itself: each client sends at most `per_worker` requests and
stops at `duration` seconds, whichever comes first. Each request yields a `Result`
with its token count (from `usage`) and, when streamed, the time of every content
chunk, so throughput, time to first token and inter-token latency come from one place.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from serving.engines.base import Engine, SamplingParams

MAX_TOKENS = 48
# Prompts whose greedy answers run well past 48 tokens, so every request makes the same
# number of tokens (there is no ignore_eos): each one asks for a long text.
PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail, step by step, how a steam engine works.",
    "Write a long essay about the history of the city of Rome.",
    "Describe in great detail a walk through a forest in autumn.",
    "Write a detailed guide to growing tomatoes in a small garden.",
    "Tell a long story about a robot who wants to become a painter.",
    "Explain in detail how the water cycle works, with examples.",
    "Write a long letter from a sailor to his family describing a storm at sea.",
]


@dataclass
class Result:
    """One request: whether it succeeded, its tokens and timings (perf_counter seconds)."""

    ok: bool
    status: int
    tokens: int
    start: float
    end: float
    chunk_times: list[float] = field(default_factory=list)
    error: str = ""
    retry_after: str | None = None

    @property
    def ttft(self) -> float | None:
        """Time to the first content chunk (streamed requests only)."""
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def gaps(self) -> list[float]:
        """Times between consecutive content chunks."""
        times = self.chunk_times
        return [b - a for a, b in zip(times, times[1:], strict=False)]


@dataclass(frozen=True)
class Target:
    """An OpenAI-compatible endpoint of one deployment."""

    base_url: str
    key: str
    model: str


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Run:
    """The results of one or more loops at one concurrency."""

    concurrency: int
    results: list[Result]
    wall: float

    @classmethod
    def merge(cls, runs: list[Run]) -> Run:
        """Pool several runs: results together, wall times summed."""
        return cls(
            runs[0].concurrency,
            [r for run in runs for r in run.results],
            sum(run.wall for run in runs),
        )

    @property
    def ok(self) -> list[Result]:
        """The requests that succeeded."""
        return [r for r in self.results if r.ok]

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens of successful requests per second of wall time."""
        return sum(r.tokens for r in self.ok) / self.wall if self.wall > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Throughput, latency percentiles (ms) and outcome counts, JSON-ready."""
        ttfts = [r.ttft * 1000 for r in self.ok if r.ttft is not None]
        gaps = [g * 1000 for r in self.ok for g in r.gaps]
        statuses = Counter(str(r.status) for r in self.results)
        failed = [r for r in self.results if not r.ok]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.results),
            "succeeded": len(self.ok),
            "failed": len(failed),
            "statuses": dict(statuses),
            "errors": sorted({r.error[:200] for r in failed})[:5],
            "tokens": sum(r.tokens for r in self.ok),
            "mean_tokens_per_request": (
                round(sum(r.tokens for r in self.ok) / len(self.ok), 1) if self.ok else 0
            ),
            "wall_s": round(self.wall, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft_ms_p50": _round(percentile(ttfts, 50)),
            "ttft_ms_p99": _round(percentile(ttfts, 99)),
            "itl_ms_p50": _round(percentile(gaps, 50)),
            "itl_ms_p99": _round(percentile(gaps, 99)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def chat_body(prompt: str, max_tokens: int, stream: bool, model: str) -> dict[str, Any]:
    """A greedy chat request, as the benchmarks send it."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def endpoint_request(
    http: httpx.AsyncClient, target: Target, prompt: str, max_tokens: int, stream: bool
) -> Result:
    """One chat completion through the HTTP endpoint."""
    url = target.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {target.key}"}
    body = chat_body(prompt, max_tokens, stream, target.model)
    start = time.perf_counter()
    try:
        if not stream:
            response = await http.post(url, json=body, headers=headers)
            end = time.perf_counter()
            if response.status_code != 200:
                return _refused(response, start, end)
            tokens = int(response.json()["usage"]["completion_tokens"])
            return Result(True, 200, tokens, start, end)
        async with http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return _refused(response, start, time.perf_counter())
            return await _read_events(response, start)
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return Result(False, 0, 0, start, time.perf_counter(), error=repr(error))


def _refused(response: httpx.Response, start: float, end: float) -> Result:
    return Result(
        False,
        response.status_code,
        0,
        start,
        end,
        error=response.text[:300],
        retry_after=response.headers.get("retry-after"),
    )


async def _read_events(response: httpx.Response, start: float) -> Result:
    times: list[float] = []
    tokens, done, error = 0, False, ""
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            error = str(event["error"].get("message"))
        if event.get("usage"):
            tokens = int(event["usage"]["completion_tokens"])
        if any(choice.get("delta", {}).get("content") for choice in event.get("choices", [])):
            times.append(time.perf_counter())
    ok = done and not error
    if not done and not error:
        error = "the stream ended without [DONE]"
    return Result(ok, 200, tokens, start, time.perf_counter(), times, error)


async def engine_request(
    engine: Engine, prompt: str, max_tokens: int, stream: bool = True
) -> Result:
    """One request on the engine in-process: the chat template and generation, as the API does."""
    start = time.perf_counter()
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    times: list[float] = []
    tokens = 0
    try:
        ids = engine.encode_chat([{"role": "user", "content": prompt}])
        async for chunk in engine.stream(ids, params):
            if chunk.text:
                times.append(time.perf_counter())
            tokens = chunk.completion_tokens
    except Exception as error:  # a failure is a result to report, not a crash
        return Result(False, 0, 0, start, time.perf_counter(), error=repr(error))
    return Result(True, 200, tokens, start, time.perf_counter(), times if stream else [])


Send = Callable[[int, int], Awaitable[Result]]


async def closed_loop(
    send: Send,
    concurrency: int,
    *,
    per_worker: int | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
) -> Run:
    """`concurrency` clients each sending requests back to back, until a count or a deadline."""
    if per_worker is None and duration is None:
        raise ValueError("a load loop needs a request count or a duration")
    started = time.perf_counter()
    deadline = started + duration if duration is not None else None

    def more(sent: int) -> bool:
        if per_worker is not None and sent >= per_worker:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        return not (stop is not None and stop.is_set())

    async def worker(index: int) -> list[Result]:
        results: list[Result] = []
        while more(len(results)):
            result = await send(index, len(results))
            results.append(result)
            if result.retry_after:  # a deliberate 503/429: come back when told to
                pause = min(_seconds(result.retry_after), _left(deadline))
                await asyncio.sleep(max(0.0, pause))
        return results

    per_client = await asyncio.gather(*(worker(i) for i in range(concurrency)))
    results = [r for rs in per_client for r in rs]
    if results:
        wall = max(r.end for r in results) - min(r.start for r in results)
    else:
        wall = time.perf_counter() - started
    return Run(concurrency, results, wall)


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


def _left(deadline: float | None) -> float:
    return 5.0 if deadline is None else deadline - time.perf_counter()


def http_client(concurrency: int) -> httpx.AsyncClient:
    """An HTTP client with one connection per concurrent client; loopback, no proxies."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(timeout=300, limits=limits, trust_env=False)


def endpoint_sender(http: httpx.AsyncClient, target: Target, max_tokens: int, stream: bool) -> Send:
    """Client `i`'s `j`-th request to the endpoint, cycling through the prompts."""

    async def send(i: int, j: int) -> Result:
        return await endpoint_request(
            http, target, PROMPTS[(i + j) % len(PROMPTS)], max_tokens, stream
        )

    return send


def engine_sender(engine: Engine, max_tokens: int, stream: bool) -> Send:
    """Client `i`'s `j`-th request to the engine in-process, cycling through the prompts."""

    async def send(i: int, j: int) -> Result:
        return await engine_request(engine, PROMPTS[(i + j) % len(PROMPTS)], max_tokens, stream)

    return send


class BackgroundLoad:
    """Endpoint load in a thread of its own while the caller changes the cluster."""

    def __init__(
        self,
        target: Target,
        concurrency: int,
        *,
        max_tokens: int = 16,
        stream: bool = False,
        max_duration: float = 300.0,
    ) -> None:
        self.target, self.concurrency = target, concurrency
        self.max_tokens, self.stream, self.max_duration = max_tokens, stream, max_duration
        self._stop = threading.Event()
        self._run: Run | None = None
        self._thread = threading.Thread(target=self._main, name="bench-load", daemon=True)
        self.started = 0.0

    def __enter__(self) -> BackgroundLoad:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        self._run = asyncio.run(self._loop())

    async def _loop(self) -> Run:
        async with http_client(self.concurrency) as http:
            send = endpoint_sender(http, self.target, self.max_tokens, self.stream)
            return await closed_loop(
                send, self.concurrency, duration=self.max_duration, stop=self._stop
            )

    def stop(self) -> Run:
        """Stop sending, wait for requests in flight, and return what happened."""
        self._stop.set()
        self._thread.join(timeout=self.max_duration + 300)
        return self._run or Run(self.concurrency, [], 0.0)
