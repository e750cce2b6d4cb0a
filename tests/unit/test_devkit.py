"""hack/devkit.py, which the tests, the benchmarks and `make up` share: the one poller, the process
helpers built on it, port_forward (against a stand-in kubectl), and the Airflow REST client
(against a stand-in of the endpoints it calls)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from devkit import (
    Airflow,
    AirflowError,
    PortForwardFailed,
    WaitTimeout,
    free_port,
    port_forward,
    stop_process,
    wait_for,
    wait_http,
)
from kubernetes.client.exceptions import ApiException
from testkit import local_http

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

    with local_http(Handler) as url:
        yield url


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


# --------------------------------------------------------------------------- port_forward


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `kubectl` first on PATH; the test writes what it does."""
    kubectl = tmp_path / "kubectl"
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return kubectl


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def test_port_forward_yields_the_local_url_once_kubectl_listens(fake_kubectl: Path) -> None:
    _script(fake_kubectl, textwrap.dedent("""
        import socket, sys, time
        local = int(sys.argv[-1].split(":")[0])  # kubectl -n NS port-forward TARGET LOCAL:REMOTE
        time.sleep(0.5)
        server = socket.create_server(("127.0.0.1", local))
        time.sleep(60)
    """))
    with port_forward("ns", "svc/web", 80) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_port_forward_that_exits_fails_with_what_kubectl_said(fake_kubectl: Path) -> None:
    _script(fake_kubectl, 'import sys\nsys.exit("error: services \\"web\\" not found")\n')
    said = r'port-forward to svc/web exited: error: services "web" not found'
    with pytest.raises(PortForwardFailed, match=said):
        with port_forward("ns", "svc/web", 80):
            pass


# --------------------------------------------------------------------------- Airflow's REST API


class FakeAirflow(BaseHTTPRequestHandler):
    """The few Airflow 3 REST endpoints devkit.Airflow calls, for one DAG."""

    paused = True
    runs: dict[str, list[str]] = {}  # run id -> states still to report, the last one repeated
    seen: list[tuple[str, str, object]] = []

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> object:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != "Bearer jwt-1":
            self._answer(401, {"detail": "Not authenticated"})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self._body()
        FakeAirflow.seen.append(("POST", self.path, body))
        if self.path == "/auth/token":
            ok = body == {"username": "admin", "password": "pw"}
            self._answer(201 if ok else 401, {"access_token": "jwt-1"} if ok else {"detail": "no"})
        elif self._authorized() and self.path == "/api/v2/dags/mlship_training/dagRuns":
            if FakeAirflow.paused:
                self._answer(409, {"detail": "DAG is paused"})
            else:
                FakeAirflow.runs["manual__1"] = ["queued", "running", "success"]
                self._answer(200, {"dag_run_id": "manual__1"})

    def do_PATCH(self) -> None:  # noqa: N802
        body = self._body()
        FakeAirflow.seen.append(("PATCH", self.path, body))
        if self._authorized():
            FakeAirflow.paused = body["is_paused"]  # type: ignore[index]
            self._answer(200, {"is_paused": FakeAirflow.paused})

    def do_GET(self) -> None:  # noqa: N802
        FakeAirflow.seen.append(("GET", self.path, None))
        if not self._authorized():
            return
        path = self.path.split("?")[0]
        if path == "/api/v2/dags/mlship_training":
            self._answer(200, {"dag_id": "mlship_training", "is_paused": FakeAirflow.paused})
        elif path.endswith("/taskInstances"):
            task = {"task_id": "ingest", "state": "success", "try_number": 1}
            self._answer(200, {"task_instances": [task]})
        elif "/logs/" in path:
            self._answer(200, {"content": [{"event": "ingested 150 rows"}, "plain line"]})
        elif path.startswith("/api/v2/dags/mlship_training/dagRuns/"):
            states = FakeAirflow.runs[path.rsplit("/", 1)[1]]
            self._answer(200, {"state": states.pop(0) if len(states) > 1 else states[0]})
        else:
            self._answer(404, {"detail": "Not Found"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def airflow_url() -> Iterator[str]:
    FakeAirflow.paused, FakeAirflow.runs, FakeAirflow.seen = True, {}, []
    with local_http(FakeAirflow) as url:
        yield url


def test_airflow_triggers_unpausing_the_dag_and_follows_the_run(airflow_url: str) -> None:
    airflow = Airflow.connect(airflow_url, "pw", timeout=10)
    run_id = airflow.trigger({"dataset": "sklearn:iris"})
    assert run_id == "manual__1"
    unpause = ("PATCH", "/api/v2/dags/mlship_training?update_mask=is_paused", {"is_paused": False})
    assert unpause in FakeAirflow.seen
    assert ("POST", "/api/v2/dags/mlship_training/dagRuns",
            {"logical_date": None, "conf": {"dataset": "sklearn:iris"}}) in FakeAirflow.seen
    assert airflow.wait_run(run_id, timeout=10, interval=0) == "success"
    assert airflow.tasks(run_id) == {"ingest": {"task_id": "ingest", "state": "success", "try_number": 1}}
    assert airflow.log(run_id, "ingest", 1) == '{"event": "ingested 150 rows"}\nplain line'


def test_airflow_refusing_a_request_says_which_and_why(airflow_url: str) -> None:
    airflow = Airflow(airflow_url, "pw")
    with pytest.raises(AirflowError, match=r'^POST /dags/mlship_training/dagRuns: 409 .*DAG is paused'):
        airflow.send("POST", "/dags/mlship_training/dagRuns", {"conf": {}})


def test_airflow_waits_for_a_token_and_names_the_last_refusal(airflow_url: str) -> None:
    with pytest.raises(WaitTimeout, match=r"an Airflow API token \(last: HTTPError\('401 Client Error"):
        Airflow.connect(airflow_url, "wrong", timeout=0.5)
