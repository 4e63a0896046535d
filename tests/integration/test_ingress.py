"""The ingress in front of the model replicas (serving.ingress), on the session's head.

One of two replicas is killed (SIGKILL, as a crash or the OOM killer would) while
non-streamed requests and streams are in flight: no non-streamed request fails
(those whose replica died are called again on the other one), and every stream either
completes or ends with an error event the `openai` SDK raises; none hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from bench.load import BackgroundLoad, Target
from devstack import eventually
from serving.serve_config import to_serve_application
from tests.conftest import Deployed
from tests.reliability.conftest import assert_envelope, full_only
from tests.reliability.test_faults import replicas, running_pids

pytestmark = [pytest.mark.cluster, pytest.mark.model]
STREAMS = 6
# A stream's whole answer is bounded: a broken one that hung would hit this, and fail.
STREAM_TIMEOUT_S = 60
STREAM_TOKENS = 400


def _stream(client: openai.OpenAI, name: str, started: threading.Barrier) -> str:
    """One streamed answer: 'complete', or 'error' when the SDK raised the stream's error."""
    stream = client.chat.completions.create(
        model=name,
        # Long enough to be still streaming when the replica is killed, on any engine:
        # the llama.cpp engine streams 48 tokens in well under a second.
        messages=[{"role": "user", "content": "Write a very long story about the sea."}],
        max_tokens=STREAM_TOKENS,
        stream=True,
    )
    try:
        first = True
        for _ in stream:
            if first:
                started.wait()
                first = False
        return "complete"
    except openai.APIError as error:
        assert "stopped" in error.message, error.message
        return "error"


def test_a_killed_replica_fails_no_request_and_ends_its_streams(bundled_model: Deployed) -> None:
    client, name = bundled_model.client, bundled_model.name
    target = Target(bundled_model.base_url, bundled_model.key, name)
    sdk = openai.OpenAI(
        api_key=bundled_model.key,
        base_url=bundled_model.base_url,
        timeout=STREAM_TIMEOUT_S,
        max_retries=0,
    )
    # The session deployment answers at most 64 tokens: room for longer streams, in place.
    with replicas(bundled_model, 2, max_length=STREAM_TOKENS):
        victim = min(running_pids(client, name))
        started = threading.Barrier(STREAMS + 1)
        with (
            BackgroundLoad(target, 6, max_tokens=8, max_duration=120) as load,
            ThreadPoolExecutor(STREAMS) as pool,
        ):
            streams = [pool.submit(_stream, sdk, name, started) for _ in range(STREAMS)]
            # Every stream has its first chunk: answers have started on both replicas.
            started.wait(timeout=STREAM_TIMEOUT_S)
            eventually(lambda: time.monotonic() - load.started > 2, 10, "load running")
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            ends = [s.result(timeout=STREAM_TIMEOUT_S + 10) for s in streams]
            eventually(lambda: time.monotonic() - killed > 3, 10, "load after the kill")
            run = load.stop()
    failed = [(r.status, r.error[:200]) for r in run.results if not r.ok]
    print(f"\n{len(run.results)} requests, failed {failed}; streams {ends}")
    assert not failed
    assert len(run.results) >= 6
    # The router spreads the six streams over both replicas: the victim held some.
    assert ends.count("error") >= 1 and set(ends) <= {"complete", "error"}


def test_the_interrupted_stream_example_streams_an_answer(bundled_model: Deployed) -> None:
    env = {**os.environ, "GALE_ENDPOINT": bundled_model.base_url, "GALE_API_KEY": bundled_model.key}
    example = Path(__file__).parents[2] / "examples" / "interrupted_stream.py"
    ran = subprocess.run(
        [sys.executable, str(example), "Say hi."],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() and "interrupted" not in ran.stdout


def test_the_body_limit_and_key_check_answer_through_the_ingress(bundled_model: Deployed) -> None:
    url = bundled_model.base_url + "/chat/completions"
    too_large = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'

    def chunks() -> object:
        yield too_large[:1000]
        yield too_large[1000:]

    with httpx.Client(timeout=60, trust_env=False) as http:
        auth = {"Authorization": f"Bearer {bundled_model.key}"}
        # Declared by Content-Length, and sent chunked without one: the same 413.
        for content in (too_large, chunks()):
            answer = http.post(url, content=content, headers=auth)  # type: ignore[arg-type]
            assert answer.status_code == 413
            assert assert_envelope(answer)["code"] == "request_too_large"
        # The key is checked first, as before the ingress.
        unauthorized = http.post(url, content=too_large)
        assert unauthorized.status_code == 401
        assert_envelope(unauthorized)
        missing = http.get(bundled_model.base_url + "/nothing", headers=auth)
        assert missing.status_code == 404
        assert f"/{bundled_model.name}/v1/nothing" in assert_envelope(missing)["message"]


@full_only
def test_a_request_is_held_while_the_model_scales_up_from_zero(bundled_model: Deployed) -> None:
    client, name = bundled_model.client, bundled_model.name
    spec = bundled_model.spec.model_copy(
        update={"min_replicas": 0, "max_replicas": 1, "scale_down_delay": 1}
    )
    client.apply_application(to_serve_application(spec, [bundled_model.record]))
    try:
        eventually(lambda: not running_pids(client, name), 180, "scaled to zero", 0.5)
        started = time.monotonic()
        answer = httpx.post(
            bundled_model.base_url + "/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {bundled_model.key}"},
            timeout=300,
            trust_env=False,
        )
        print(f"\nanswered {answer.status_code} after {time.monotonic() - started:.1f}s")
        assert answer.status_code == 200, answer.text
    finally:
        bundled_model.apply([bundled_model.record])
        eventually(lambda: len(running_pids(client, name)) == 1, 300, "one replica again")
