"""The tiers' skip-or-fail switch (MLSHIP_REQUIRE) and what counts as "no cluster" (tests/testkit.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from devkit import free_port
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from testkit import REQUIRE, cluster_unreachable_reason, local_http, require_or_skip, required

pytestmark = pytest.mark.unit


def test_unset_a_missing_prerequisite_skips_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE, raising=False)
    assert not required("chart")
    with pytest.raises(pytest.skip.Exception, match="helm is not on PATH"):
        require_or_skip("helm is not on PATH", "chart")


def test_all_makes_every_tier_fail_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE, "all")
    for tier in ("images", "chart", "cluster", "e2e"):
        with pytest.raises(pytest.fail.Exception) as failed:
            require_or_skip("mlship-step-train:dev not built", tier)
        assert str(failed.value) == (
            f"mlship-step-train:dev not built [MLSHIP_REQUIRE=all: the {tier} tier must run, not skip]")


def test_a_list_requires_only_the_tiers_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE, "chart, images")
    assert required("chart") and required("images")
    assert not required("cluster") and not required("e2e")
    with pytest.raises(pytest.skip.Exception):
        require_or_skip("no cluster", "cluster")
    with pytest.raises(pytest.fail.Exception, match=r"no helm \[MLSHIP_REQUIRE=chart, images: the chart"):
        require_or_skip("no helm", "chart")


@pytest.mark.parametrize("value", ["1", "yes", "all,clusters"])
def test_an_unknown_value_fails_rather_than_meaning_nothing(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(REQUIRE, value)
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE}={value}: unknown"):
        required("chart")


@pytest.mark.parametrize("value", ["", " , "])
def test_an_empty_value_requires_nothing(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(REQUIRE, value)
    assert not required("e2e")


# ------------------------------------------------------------------ what "no cluster" means


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "t", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
    }))
    return path


def test_no_kubeconfig_at_all_is_no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    assert cluster_unreachable_reason().startswith("no cluster: KUBECONFIG is not set")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone.kubeconfig"))
    assert cluster_unreachable_reason().startswith(f"no cluster: KUBECONFIG={tmp_path}/gone.kubeconfig")


def test_a_refused_connection_is_no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{port}")))
    reason = cluster_unreachable_reason()
    assert reason.startswith(f"no cluster: https://127.0.0.1:{port} refused the connection")
    assert "Connection refused" in reason


def test_a_server_that_never_answers_is_no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", server)))
        reason = cluster_unreachable_reason(timeout=0.3)
    assert reason.startswith(f"no cluster: {server} refused the connection or did not answer within 0.3s")


@pytest.fixture
def http_server() -> Iterator[str]:
    """Plain HTTP that answers every request 401 Unauthorized."""

    class Deny(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Deny) as url:
        yield url.removeprefix("http://")


def test_an_auth_error_is_an_error_not_a_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_server: str
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"http://{http_server}")))
    with pytest.raises(ApiException) as denied:
        cluster_unreachable_reason()
    assert denied.value.status == 401


def test_a_tls_error_is_an_error_not_a_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_server: str
) -> None:
    # https to a server that speaks plain HTTP: the handshake fails, which is no timeout
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"https://{http_server}")))
    with pytest.raises(Exception, match="SSL") as failed:
        cluster_unreachable_reason()
    assert not isinstance(failed.value, pytest.skip.Exception)


def test_a_broken_kubeconfig_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "kc"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    with pytest.raises(ConfigException):
        cluster_unreachable_reason()
