"""The operator's registry questions against a real MLflow server: alias, pinned version, and
every way the answer can be missing, each with a message saying exactly what is wrong."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from devkit import free_port
from mlflow import MlflowClient
from mlship_operator import registry
from mlship_operator.config import from_env
from mlship_operator.spec import serving_spec
from testkit import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]



@pytest.fixture
def fast_failing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # What configure_client() does in the operator, scoped to this test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    registry.configure_client(from_env({"MLFLOW_TRACKING_URI": "http://x",
                                        "MLSHIP_REGISTRY_TIMEOUT_SECONDS": "3"}))
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def make_spec(uri: str, **spec: str):
    cr = {"metadata": {"name": "m", "namespace": "n", "uid": "u"}, "spec": spec}
    return serving_spec(cr, from_env({"MLFLOW_TRACKING_URI": uri}))


@pytest.fixture
def model(mlflow_server: str) -> tuple[str, list[str]]:
    """A registered model with three versions (registry entries only; nothing is loaded)."""
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = f"op-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(name)
    versions = []
    for _ in range(3):
        run = client.create_run(experiment)
        mv = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        versions.append(str(mv.version))
    client.set_registered_model_alias(name, "champion", versions[0])
    return name, versions


def test_alias_resolves_and_follows_a_move(mlflow_server, model, fast_failing_client) -> None:
    name, versions = model
    spec = make_spec(mlflow_server, model=name)  # no alias, no version: champion
    first = registry.resolve(spec)
    assert (first.ok, first.version, first.reason) == (True, versions[0], "Resolved")
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(name, "champion",
                                                                        versions[2])
    assert registry.resolve(spec).version == versions[2]


def test_pinned_version(mlflow_server, model, fast_failing_client) -> None:
    name, versions = model
    assert registry.resolve(make_spec(mlflow_server, model=name, version=versions[1])).version == (
        versions[1]
    )
    missing = registry.resolve(make_spec(mlflow_server, model=name, version="99"))
    assert missing.reason == "VersionNotFound"
    assert f"version 99 of registered model '{name}' does not exist" in missing.message


def test_missing_alias_and_model(mlflow_server, model, fast_failing_client) -> None:
    name, _ = model
    no_alias = registry.resolve(make_spec(mlflow_server, model=name, alias="canary"))
    assert no_alias.reason == "AliasNotFound"
    assert f"registered model '{name}' has no alias 'canary'" in no_alias.message
    no_model = registry.resolve(make_spec(mlflow_server, model="no-such-model"))
    assert no_model.reason == "ModelNotFound"
    assert "registered model 'no-such-model' does not exist" in no_model.message


def test_unreachable_mlflow_fails_fast_without_client_retries(fast_failing_client) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    answer = registry.resolve(make_spec(uri, model="iris"))
    assert time.monotonic() - started < 10  # MLflow's own 7 retries would take minutes
    assert answer.reason == "MlflowUnreachable"
    assert f"cannot query MLflow at {uri}" in answer.message


def test_an_unknown_host_is_named_before_the_message_is_clipped(fast_failing_client) -> None:
    uri = "http://no-such-host.invalid:5000"
    answer = registry.resolve(make_spec(uri, model="iris"))
    assert answer.reason == "MlflowUnreachable"
    # MLflow's own message names the cause only after ~290 characters of URL and pool details
    assert answer.message.startswith(
        f"cannot query MLflow at {uri}: NameResolutionError: Failed to resolve 'no-such-host.invalid'"
    ), answer.message
    assert len(answer.message) < 400


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A catch-all responder: 404 to everything, keeping the connection open (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"default backend - 404"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def outage() -> Iterator[TcpProxy]:
    """MLflow's address during an outage: a proxy to a catch-all that is not MLflow."""
    catch_all = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=catch_all.serve_forever, daemon=True).start()
    proxy = TcpProxy(("127.0.0.1", catch_all.server_address[1])).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        catch_all.shutdown()
        catch_all.server_close()


def test_recovers_when_mlflow_is_back_behind_connections_held_by_another_server(
    mlflow_server, model, fast_failing_client, outage
) -> None:
    name, versions = model
    spec = make_spec(f"http://127.0.0.1:{outage.port}", model=name)
    during = registry.resolve(spec)
    assert during.reason == "MlflowUnreachable", during
    assert "404" in during.message
    # MLflow is back: new connections reach it; the one opened during the outage still leads to
    # the catch-all, which keeps it open. The next question must not be asked on it.
    host, port = mlflow_server.rsplit("/", 1)[1].split(":")
    outage.upstream = (host, int(port))
    after = registry.resolve(spec)
    assert (after.reason, after.version) == ("Resolved", versions[0]), after
    assert registry.resolve(spec).version == versions[0]
