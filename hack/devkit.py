"""What `make up` (hack/up.py), the tests and the benchmarks share: one way to wait for something,
to run a local server process, to start an MLflow server, and to speak to Airflow's REST API.

It needs no pytest and nothing of mlship's own, so a tool can import it as well as a test:
hack/up.py runs as `python hack/up.py` and finds it beside itself; pytest puts hack/ on its
pythonpath (pyproject.toml); the benchmarks put hack/ on sys.path. Failures raise ordinary
exceptions whose message says what was awaited and what was last seen; each caller turns them
into its own kind of failure (a failed test, a failed `make up` stage) where it needs to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

# What a check may raise while the thing it waits for is not there yet (a server not listening or
# answering an error, an API object not created yet): "not yet", not a failure.
NOT_YET: tuple[type[BaseException], ...] = (requests.RequestException, ApiException)


class WaitTimeout(TimeoutError):
    """wait_for gave up; the message says on what, after how long, and what it saw last."""


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 1.0, *,
             retry: tuple[type[BaseException], ...] = NOT_YET) -> T:
    """Call `check` every `interval` seconds until it returns something truthy, and return that.

    An exception of a type in `retry` counts as "not yet"; any other propagates at once. After
    `timeout` seconds raises WaitTimeout naming `what` and the last value or exception seen.
    """
    __tracebackhide__ = True  # pytest reports the caller's line
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
        except retry as exc:
            last = exc
        else:
            if got:
                return got
            last = got
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"[:3000])


# --------------------------------------------------------------------------- local processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None, *,
              interval: float = 0.3, log: Path | None = None) -> None:
    """Wait until GET `url` answers 2xx; fail at once when `proc` (the server) exits. `log`, the
    server's output, is named in either failure."""
    see = f"; see {log}" if log else ""

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with {proc.returncode}{see}")
        return requests.get(url, timeout=2).ok

    try:
        wait_for(f"{url} to answer", answers, timeout, interval, retry=(requests.RequestException,))
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}{see}") from None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds. With `group`, signal
    its whole process group (it was started with start_new_session=True), children too."""

    def send(sig: int) -> None:
        if group:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (one worker, proxied artifacts in `root/artifacts`,
    SQLite in `root/mlflow.db` unless `backend_uri` says otherwise), its output in `log`.

    `with MlflowServer(root) as server:` starts it and stops it; start() and stop() may also be
    called in turn, and it comes back on the same port with the same store. `new_session` starts
    it in a process group of its own (its pid is the group's id), stopped as a whole.
    """

    def __init__(self, root: Path, *, backend_uri: str | None = None, log: Path | None = None,
                 timeout: float = 120, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, new_session: bool = False) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.log = log or root / "server.log"
        self.timeout = timeout
        self.python = python
        self.env = {**(os.environ if env is None else env), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = 0

    def start(self) -> Self:
        # the first start writes a fresh log, a restart adds to it
        with open(self.log, "ab" if self._started else "wb") as out:
            self.proc = subprocess.Popen(
                [self.python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", self.backend_uri,
                 "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=self.new_session,
            )
        self._started += 1
        try:
            wait_http(f"{self.uri}/health", self.timeout, self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20, group=self.new_session)
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class PortForwardFailed(RuntimeError):
    """`kubectl port-forward` exited; the message carries what it said."""


@contextmanager
def port_forward(namespace: str, target: str, port: int, timeout: float = 30) -> Iterator[str]:
    """http://127.0.0.1:<local> forwarded by `kubectl port-forward` to `target` ("svc/<name>"), as a
    user reaches the UIs.

    kubectl binds the forward to one pod behind a Service when it starts: open a new one after
    that pod is replaced (a rollout, a restart).
    """
    local = free_port()
    # stderr to a file, not a pipe: a forward held open for a long wait may log many a failed
    # connection, and a full pipe nobody reads would stall kubectl
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            ["kubectl", "-n", namespace, "port-forward", target, f"{local}:{port}"],
            stdout=subprocess.DEVNULL, stderr=errors, text=True,
        )
        try:

            def connected() -> bool:
                if proc.poll() is not None:
                    errors.seek(0)
                    raise PortForwardFailed(f"kubectl port-forward to {target} exited: {errors.read()}")
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", local)) == 0

            wait_for(f"port-forward to {target}", connected, timeout, 0.3)
            yield f"http://127.0.0.1:{local}"
        finally:
            stop_process(proc, timeout=10)


# --------------------------------------------------------------------------- Airflow's REST API

DAG = "mlship_training"


class AirflowError(RuntimeError):
    """Airflow refused a request; the message names it and carries Airflow's answer."""


class Airflow:
    """Airflow 3's REST API (v2) at `url`, with a JWT from /auth/token (the chart's admin user)."""

    def __init__(self, url: str, password: str, username: str = "admin") -> None:
        self.url = url
        self.password = password
        resp = requests.post(
            f"{url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def connect(cls, url: str, password: str, timeout: float) -> Self:
        """Log in, waiting up to `timeout` seconds for the API server (and its admin) to be up."""
        return wait_for("an Airflow API token", lambda: cls(url, password), timeout, 3)

    def get(self, path: str, **params: Any) -> Any:
        resp = requests.get(f"{self.url}/api/v2{path}", headers=self.headers, params=params, timeout=60)
        resp.raise_for_status()
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.text

    def send(self, method: str, path: str, body: dict[str, Any], **params: Any) -> Any:
        resp = requests.request(
            method, f"{self.url}/api/v2{path}", headers=self.headers, json=body, params=params, timeout=60
        )
        if not resp.ok:
            raise AirflowError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json()

    def trigger(self, conf: dict[str, Any] | None = None, *, dag: str = DAG) -> str:
        """Start a run of a DAG (unpausing it if needed); returns its dag_run_id."""
        info = wait_for(f"the DAG {dag} to be parsed", lambda: self.get(f"/dags/{dag}"), 300, 3)
        if info["is_paused"]:
            self.send("PATCH", f"/dags/{dag}", {"is_paused": False}, update_mask="is_paused")
        run_ = self.send("POST", f"/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run_["dag_run_id"])

    def wait_run(self, run_id: str, timeout: float = 1800, on_poll: Callable[[], None] | None = None,
                 *, dag: str = DAG, interval: float = 2) -> str:
        """Wait until the run ends; returns "success" or "failed"."""

        def finished() -> str | None:
            if on_poll:
                on_poll()
            state = self.get(f"/dags/{dag}/dagRuns/{run_id}")["state"]
            return state if state in ("success", "failed") else None

        return str(wait_for(f"{dag} run {run_id}", finished, timeout, interval))

    def tasks(self, run_id: str, *, dag: str = DAG) -> dict[str, dict[str, Any]]:
        listing = self.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in listing}

    def log(self, run_id: str, task: str, try_number: int, *, dag: str = DAG) -> str:
        """The task log the UI shows for one try, as text."""
        log = self.get(
            f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{task}/logs/{max(try_number, 1)}",
            full_content="true",
        )
        content = log.get("content", log) if isinstance(log, dict) else log
        if isinstance(content, list):  # structured log lines (Airflow 3)
            return "\n".join(
                json.dumps(line, ensure_ascii=False) if isinstance(line, dict) else str(line)
                for line in content
            )
        return str(content)
