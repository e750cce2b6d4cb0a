"""Small helpers shared by every test tier (tests/ is on pytest's pythonpath). What the tests share
with `make up` and the benchmarks (waiting, free ports, server processes, MLflow, Airflow) is in
hack/devkit.py."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import pytest
from devkit import free_port

# CI sets MLSHIP_REQUIRE=all (.ci/run): a tier whose prerequisite is absent (no helm, no cluster, an
# image not built, no docker, no chromium) then fails with the reason instead of skipping, so a
# green run has run every tier. A comma-separated list of tiers requires only those.
REQUIRE = "MLSHIP_REQUIRE"
TIERS = ("unit", "integration", "images", "chart", "cluster", "e2e", "faults", "security")


def required(tier: str) -> bool:
    """Whether MLSHIP_REQUIRE says `tier` must run here (its missing prerequisites fail)."""
    assert tier in TIERS, tier
    wanted = {t.strip() for t in os.environ.get(REQUIRE, "").split(",") if t.strip()}
    unknown = wanted - {"all", *TIERS}
    if unknown:
        pytest.fail(f"{REQUIRE}={os.environ[REQUIRE]}: unknown {sorted(unknown)}; "
                    f"'all' or a comma-separated list of {', '.join(TIERS)}", pytrace=False)
    return "all" in wanted or tier in wanted


def require_or_skip(reason: str, tier: str) -> NoReturn:
    """A prerequisite of `tier` is absent: skip with `reason`, or fail with it where the tier is
    required (MLSHIP_REQUIRE)."""
    __tracebackhide__ = True  # report the caller's line, not this one
    if required(tier):
        pytest.fail(f"{reason} [{REQUIRE}={os.environ[REQUIRE]}: the {tier} tier must run, not skip]",
                    pytrace=False)
    pytest.skip(reason)


def _refused_or_timed_out(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a connection refused or a timeout, nothing else."""
    import urllib3.exceptions as u3

    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:  # (an ApiException's .reason is a str)
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError | TimeoutError | u3.ReadTimeoutError):
            return True
        if isinstance(e, u3.ConnectTimeoutError) and not isinstance(e, u3.NewConnectionError):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
    return False


def cluster_unreachable_reason(timeout: float = 5) -> str | None:
    """Why there is no cluster to test on, or None when KUBECONFIG's cluster answers.

    "No cluster" is only: no kubeconfig at all, or its API server refusing the connection or not
    answering within `timeout`. Anything else (a kubeconfig that does not load, a TLS or auth
    error, an unknown host) is raised: a broken setup is an error, never a skip.
    """
    from kubernetes import client, config

    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not any(os.path.exists(p) for p in paths or [os.path.expanduser("~/.kube/config")]):
        where = f"KUBECONFIG={os.environ['KUBECONFIG']} does not exist" if paths else "KUBECONFIG is not set"
        return f"no cluster: {where} (run `hack/cluster up` and `eval $(hack/cluster env)`)"
    conf = client.Configuration()
    # the file named now (kubernetes reads KUBECONFIG once, at import); one that does not load raises
    config.load_kube_config(os.pathsep.join(paths) or None, client_configuration=conf)
    conf.retries = 1
    api = client.ApiClient(conf)
    try:
        client.VersionApi(api).get_code(_request_timeout=timeout)
    except Exception as exc:
        if _refused_or_timed_out(exc):
            return (f"no cluster: {conf.host} refused the connection or did not answer within "
                    f"{timeout:g}s ({exc.__class__.__name__}: {exc})")[:400]
        raise
    finally:
        api.close()
    return None


MLSHIP = Path(sys.executable).with_name("mlship")  # the console script from pyproject

# Every step is a fresh interpreter importing mlflow, pandas and scikit-learn. With
# PYTHONDONTWRITEBYTECODE set (as on this machine) each one would recompile thousands of
# modules; a bytecode cache outside the venv makes that a one-time cost.
PYCACHE = Path(tempfile.gettempdir()) / "mlship-test-pycache"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child process running mlship: none of this one's MLFLOW_/MLSHIP_
    settings (MLSHIP_REQUIRE included: it is the tests', not mlship's)."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "MLSHIP_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["MLSHIP_MLFLOW_WAIT_SECONDS"] = "2"
    env.update(extra)
    return env


class TcpProxy:
    """A local TCP proxy to `upstream` (host, port) on a fixed port (url), as a Service is to its
    backends: a new connection goes to the current upstream (assignable), an open one stays with
    the upstream it was opened to, as conntrack keeps it. stop() closes the port and every
    connection (the backend is gone); start() opens the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener:
            # close() alone does not wake a thread blocked in accept(); shutdown() does
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            _shutdown(conn)
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(self.upstream)
            self._conns += [downstream, upstream]
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _shutdown(src)
        _shutdown(dst)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# A CSV whose column x has 2 nulls: the default rules (max_nulls=0) stop it at validate.
CSV_WITH_NULLS = "x,y,target\n1.0,2,a\n,3,b\n2.0,4,a\n,5,b\n3.0,6,a\n4.0,7,b\n"


def assert_stopped_at_validate(proc: subprocess.CompletedProcess[str]) -> None:
    """`mlship run` on CSV_WITH_NULLS, whatever the launcher: validate failed, saying why, and
    nothing after it ran."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^  validate  FAILED$", proc.stdout, re.MULTILINE), proc.stdout
    assert (
        "step validate failed: validation failed: column 'x': rule max_nulls=0 violated by 2 "
        "(2 null value(s))"
    ) in proc.stderr
    assert "featurize" not in proc.stdout


@contextmanager
def local_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on a free loopback port, answering with `handler` from a thread;
    yields its base URL (http://127.0.0.1:PORT) and shuts it down after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def alert_receiver(status: int = 200) -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP receiver of mlship.alerts' webhook posts answering `status`: its URL (with a
    path that stands for a chat webhook's secret), and the JSON bodies posted to it."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Receiver) as base:
        yield f"{base}/services/T0/B0/s3cr3t", received


def basic_auth(user: str, password: str) -> str:
    """The value of an `Authorization: Basic` header for `user` and `password`."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


DVC = str(Path(sys.executable).with_name("dvc"))


def git_dvc(cwd: Path, *cmd: str) -> str:
    """Run git or dvc in `cwd` (a test's own repository, a fixed author); its stdout."""
    env = clean_env(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                    GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_dvc_repo(base: Path, path: str, versions: dict[str, bytes], tier: str) -> Path:
    """A git repository base/repo, branch main, with `dvc init` and a local-directory remote
    (base/store): `path` tracked by DVC, one commit tagged per version (in order, the last at HEAD),
    each pushed; the repo's DVC cache emptied, so what is read comes from the remote."""
    try:
        import dvc  # noqa: F401
    except ImportError:
        require_or_skip("the dvc package (mlship[dvc]) reads DVC sources", tier)
    root = base / "repo"
    root.mkdir()
    git_dvc(root, "git", "init", "-q", "-b", "main")
    git_dvc(root, DVC, "init", "-q")
    git_dvc(root, DVC, "remote", "add", "-d", "store", str(base / "store"))
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    for tag, data in versions.items():
        (root / path).write_bytes(data)
        git_dvc(root, DVC, "add", "-q", path)
        git_dvc(root, "git", "add", "-A")
        git_dvc(root, "git", "commit", "-qm", tag)
        git_dvc(root, "git", "tag", tag)
        git_dvc(root, DVC, "push", "-q")
    shutil.rmtree(root / ".dvc" / "cache")
    return root
