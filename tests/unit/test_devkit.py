"""The one poller, and the process helpers built on it (hack/devkit.py), which the tests, the
benchmarks and `make up` share."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from devkit import WaitTimeout, free_port, stop_process, wait_for, wait_http
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.unit


def test_wait_for_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, [], {"ready": True}])
    assert wait_for("readiness", lambda: next(answers), timeout=5, interval=0) == {"ready": True}


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    with pytest.raises(WaitTimeout, match=r"^timed out after 0.2s waiting for the pods \(last: \[\]\)$"):
        wait_for("the pods", lambda: [], timeout=0.2, interval=0.05)


def test_a_timeout_is_a_timeout_error_with_the_last_exception() -> None:
    def refused() -> bool:
        raise requests.ConnectionError("refused")

    with pytest.raises(TimeoutError, match=r"waiting for MLflow \(last: ConnectionError\('refused'\)\)"):
        wait_for("MLflow", refused, timeout=0.1, interval=0.02)


def test_api_and_http_errors_count_as_not_yet_by_default() -> None:
    errors = iter([ApiException(status=404), requests.HTTPError("503")])

    def check() -> str:
        for exc in errors:
            raise exc
        return "there"

    assert wait_for("an object", check, timeout=5, interval=0) == "there"


def test_any_other_exception_fails_at_once() -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise KeyError("state")

    with pytest.raises(KeyError):
        wait_for("a run", broken, timeout=30, interval=0)
    assert calls == [1]


def test_retry_says_which_exceptions_mean_not_yet() -> None:
    def forbidden() -> bool:
        raise ApiException(status=403)

    with pytest.raises(ApiException):
        wait_for("a CRD", forbidden, timeout=30, retry=())


def test_a_message_is_cut_to_3000_characters() -> None:
    with pytest.raises(WaitTimeout) as failed:
        wait_for("x" * 5000, lambda: None, timeout=0.01, interval=0)
    assert len(str(failed.value)) == 3000


@pytest.fixture
def health_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_http_returns_once_the_url_answers_2xx(health_url: str) -> None:
    wait_http(f"{health_url}/health", timeout=10)


def test_wait_http_times_out_on_an_error_status_naming_the_url_and_the_log(health_url: str) -> None:
    with pytest.raises(WaitTimeout, match=rf"waiting for {health_url}/down to answer .*; see /tmp/x.log"):
        wait_http(f"{health_url}/down", timeout=0.5, interval=0.1, log=Path("/tmp/x.log"))


def test_wait_http_fails_at_once_when_the_server_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match=r"process serving http://127.0.0.1:\d+/health exited with 3"):
        wait_http(f"http://127.0.0.1:{free_port()}/health", timeout=60, proc=proc)


def test_stop_process_terminates_then_kills() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    stop_process(stubborn, timeout=0.5)
    assert stubborn.returncode == -9
