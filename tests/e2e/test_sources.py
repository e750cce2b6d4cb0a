"""Dataset sources on the cluster (#20): mlship_training ingests the records of a JSON API that wants
an API key, and a DVC-tracked file of a git repo at two tags, both served by a small HTTP server pod
in the release's namespace.

The credentials reach the training DAG's ingest pod only (of its steps), from the Secret the release names in
pipeline.sourceHeadersSecret from its install on (kit.BASE_VALUES; tests/e2e/release.py creates it
with no credentials first): this module fills it in for its runs and puts the neutral content back
after, with no upgrade, as a step pod reads it when it starts. The server's host gets the API key
(X-Api-Key) and an `Authorization: Basic` header, which the git repo and the DVC remote both
require (401 without it). The git repo is served with git's "dumb HTTP" protocol (static files
after `git update-server-info`) and its DVC remote as DVC's http remote layout (files/md5/xx/...),
as `dvc push` wrote it to a directory. The server reads the key and the Authorization it wants
from a Secret of its own.
Three training runs: the JSON API, then the DVC file @v1 and @v2. The release names a second Secret
in pipeline.sourceCredentialsSecret the same way (filled in and put back with the first), which the
ingest pod (only) gets as envFrom.

Runs on the session's release (tests/e2e/release.py); needs `git` and the dvc extra on the machine
running the tests (the repo is made here), the step-ingest image with the dvc extra, and
python:3.11-slim-bookworm in the cluster (the server; release.IMAGES has it already).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from devkit import WaitTimeout, wait_for
from e2e.kit import (
    ALERTS_SECRET,
    EXPERIMENT,
    NEUTRAL_SOURCE_SECRETS,
    SOURCE_ENV_SECRET,
    SOURCE_HEADERS_KEY,
    SOURCE_HEADERS_SECRET,
    TAG_RUN_KEY,
    Airflow,
    Release,
    all_ready,
    python_pod,
    secret_body,
    service_body,
)
from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient
from testkit import basic_auth

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

SERVER = "mlship-e2e-sources"  # the pod, its Service, its ConfigMap and its Secret (api-key, git-auth)
PORT = 8000
API_PATH = "/api/v1/patients"

# The server: extracts the ConfigMap's tarball to /tmp/site and serves it; paths under /api/ answer
# only with the right X-Api-Key, everything else (the git repo's dumb-HTTP files, the DVC remote)
# only with the right Authorization (401 otherwise), as static files. ROOT, TARBALL and PORT are
# replaced when it runs on this machine (server_py).
SERVER_PY = r"""
import http.server, os, tarfile
ROOT = "/tmp/site"
TARBALL = "/site/site.tar.gz"
PORT = 8000
with tarfile.open(TARBALL) as t:
    # the tarball is this test's own; "data" where the Python has extraction filters (3.11.4+)
    t.extractall(ROOT, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
KEY = os.environ["API_KEY"]
AUTH = os.environ["GIT_AUTH"]

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=ROOT, **kwargs)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            return self.answer(200, b"ok")
        if path.startswith("/api/"):
            if self.headers.get("X-Api-Key") != KEY:
                return self.answer(401, b'{"error": "unauthorized"}')
            self.path = path + ".json"
        elif self.headers.get("Authorization") != AUTH:
            return self.answer(401, b'{"error": "unauthorized"}')
        return super().do_GET()

    def do_HEAD(self):
        if self.headers.get("Authorization") != AUTH:
            return self.answer(401, b"")
        return super().do_HEAD()

    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
"""


def server_py(root: str = "/tmp/site", tarball: str = "/site/site.tar.gz", port: int = PORT) -> str:  # noqa: S108
    """SERVER_PY serving `tarball` from `root` on `port` (the defaults: as the pod runs it)."""
    return (SERVER_PY.replace('ROOT = "/tmp/site"', f"ROOT = {root!r}")
            .replace('TARBALL = "/site/site.tar.gz"', f"TARBALL = {tarball!r}")
            .replace("PORT = 8000", f"PORT = {port}"))


def headers_for(host: str, key: str, auth: str) -> dict[str, dict[str, str]]:
    """$MLSHIP_SOURCE_HEADERS for the server, keyed by host:port (only this server gets them):
    the JSON API's key, and the Authorization git and the DVC remote take from the same host."""
    return {host: {"X-Api-Key": key, "Authorization": auth}}


def api_answer() -> tuple[bytes, int]:
    """A weather-API-like nested answer: diabetes records, features and outcome in nested objects
    (serum measures in a list). Returns the bytes and the number of records."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    records = [
        {
            "id": i,
            "patient": {"age": row.age, "sex": row.sex},
            "measures": {"bmi": row.bmi, "bp": row.bp,
                         "serum": [row.s1, row.s2, row.s3, row.s4, row.s5, row.s6]},
            "outcome": {"progression": row.target, "unit": "one year"},
        }
        for i, row in enumerate(frame.itertuples(index=False))
    ]
    body = {"status": "ok", "cohort": "e2e", "data": {"count": len(records), "records": records}}
    return json.dumps(body).encode(), len(records)


def dvc_versions() -> dict[str, bytes]:
    """data.csv at tag v1 (the first 200 diabetes rows) and v2 (all 442)."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.round(6)
    return {"v1": frame.head(200).to_csv(index=False).encode(), "v2": frame.to_csv(index=False).encode()}


def sh(cwd: Path, *cmd: str) -> str:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd),
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@mlship.test",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@mlship.test"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr[-2000:]}"
    return proc.stdout.strip()


@dataclass
class Site:
    """What the server pod serves, and the sources that read it."""

    base: str  # http://<service>.<namespace>.svc.cluster.local:8000
    api_body: bytes = b""
    api_records: int = 0
    data: dict[str, bytes] = field(default_factory=dict)  # tag -> data.csv
    commits: dict[str, str] = field(default_factory=dict)  # tag -> commit

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://")

    @property
    def json_source(self) -> str:
        columns = ",".join(
            [f"{c}:patient.{c}" for c in ("age", "sex")] + [f"{c}:measures.{c}" for c in ("bmi", "bp")]
            + [f"s{i + 1}:measures.serum.{i}" for i in range(6)] + ["target:outcome.progression"]
        )
        return f"json+{self.base}{API_PATH}?cohort=e2e#records=data.records&columns={columns}"

    def dvc_source(self, tag: str) -> str:
        return f"dvc:{self.base}/repo.git#data.csv@{tag}"


def build_site(root: Path, site: Site) -> bytes:
    """The served files as a .tar.gz: api/v1/patients.json, repo.git (bare, dumb-HTTP ready) and
    remote/ (what `dvc push` wrote), made with git and dvc; fills `site` in."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    served, work = root / "site", root / "work"
    (served / "api" / "v1").mkdir(parents=True)
    work.mkdir()
    site.api_body, site.api_records = api_answer()
    (served / f"{API_PATH.lstrip('/')}.json").write_bytes(site.api_body)

    sh(work, "git", "init", "-q", "-b", "main")
    sh(work, dvc, "init", "-q")
    sh(work, dvc, "remote", "add", "-d", "store", f"{site.base}/remote")  # what the pod reads
    sh(work, dvc, "remote", "add", "--local", "push", str(served / "remote"))  # what this writes
    site.data = dvc_versions()
    for tag, data in site.data.items():
        (work / "data.csv").write_bytes(data)
        sh(work, dvc, "add", "-q", "data.csv")
        sh(work, "git", "add", "-A")
        sh(work, "git", "commit", "-qm", f"data {tag}")
        sh(work, "git", "tag", tag)
        sh(work, dvc, "push", "-q", "-r", "push")
        site.commits[tag] = sh(work, "git", "rev-parse", f"{tag}^{{commit}}")
    sh(root, "git", "clone", "-q", "--bare", "--no-hardlinks", str(work), str(served / "repo.git"))
    sh(served / "repo.git", "git", "update-server-info")  # info/refs, objects/info/packs: dumb HTTP
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(served.rglob("*")):
            if path.is_file() and "hooks" not in path.relative_to(served).parts:
                tar.add(path, arcname=str(path.relative_to(served)), recursive=False)
    return buf.getvalue()


def server_pod(namespace: str) -> dict[str, Any]:
    return python_pod(
        SERVER, namespace, server_py(), PORT,
        env=({"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": SERVER, "key": "api-key"}}},
             {"name": "GIT_AUTH", "valueFrom": {"secretKeyRef": {"name": SERVER, "key": "git-auth"}}}),
        mounts=({"name": "site", "mountPath": "/site", "readOnly": True},),
        volumes=({"name": "site", "configMap": {"name": SERVER}},),
    )  # fmt: skip


def put_back_neutral_sources(release: Release) -> None:
    """The sources' Secrets hold kit.NEUTRAL_SOURCE_SECRETS again (each, even when another fails)."""
    failed = []
    for name, data in NEUTRAL_SOURCE_SECRETS.items():
        try:
            release.replace_secret(name, data)
        except ApiException as exc:
            failed.append(f"{name}: {exc.status} {exc.reason}")
    assert not failed, f"the sources' Secrets not put back: {failed}"


@pytest.fixture(scope="module")
def site(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The server pod, its Service, ConfigMap and Secret, and the sources' Secrets the release names
    filled in with the server's credentials; all undone after (the sources' Secrets first)."""
    pytest.importorskip("dvc", reason="the dvc package (mlship[dvc]) makes the DVC repo")
    ns, core = release.namespace, release.core
    site = Site(base=f"http://{SERVER}.{ns}.svc.cluster.local:{PORT}")
    tarball = build_site(tmp_path_factory.mktemp("sources"), site)
    encoded = base64.b64encode(tarball).decode()
    assert len(encoded) < 900_000, f"the site's tarball is {len(encoded)} bytes in base64: too big"
    key, auth = uuid.uuid4().hex, basic_auth("e2e-reader", uuid.uuid4().hex)
    headers = headers_for(site.host, key, auth)
    created: list[tuple[str, str]] = []
    filled = False
    try:
        core.create_namespaced_secret(ns, secret_body(SERVER, {"api-key": key, "git-auth": auth}))
        created.append(("secret", SERVER))
        core.create_namespaced_config_map(ns, {"metadata": {"name": SERVER},
                                               "binaryData": {"site.tar.gz": encoded}})
        created.append(("config_map", SERVER))
        core.create_namespaced_pod(ns, server_pod(ns))
        created.append(("pod", SERVER))
        core.create_namespaced_service(ns, service_body(SERVER, PORT))
        created.append(("service", SERVER))
        try:
            wait_for(f"pod {SERVER} to be Ready",
                     lambda: all_ready([core.read_namespaced_pod(SERVER, ns)]), timeout=180, interval=2)
        except WaitTimeout as e:
            raise AssertionError(f"{e}; its log: {core.read_namespaced_pod_log(SERVER, ns)[-2000:]}") from e
        filled = True  # before: a replace that failed may still have been applied
        # the release names both from its install on: the next step pods read this, no rollout
        release.replace_secret(SOURCE_HEADERS_SECRET, {SOURCE_HEADERS_KEY: json.dumps(headers)})
        release.replace_secret(SOURCE_ENV_SECRET, {"MLSHIP_E2E_SOURCE_ENV": "1"})
        yield site
    finally:
        try:
            if filled:  # first: no later step pod may read this module's credentials
                put_back_neutral_sources(release)
        finally:
            for kind, name in reversed(created):
                try:
                    getattr(core, f"delete_namespaced_{kind}")(name, ns)
                except ApiException as exc:
                    if exc.status != 404:
                        raise


class SecretEnvs:
    """The environment variables each step's new pods read from Secrets (polled while a run goes
    on: succeeded pods are deleted)."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.before = {p.metadata.uid for p in release.pods("app.kubernetes.io/component=training-step")}
        self.seen: dict[str, dict[str, Any]] = {}  # step -> {name: secretKeyRef, "envFrom": Secrets}

    def poll(self) -> None:
        for pod in self.release.pods("app.kubernetes.io/component=training-step"):
            if pod.metadata.uid in self.before:
                continue
            base = next(c for c in pod.spec.containers if c.name == "base")
            refs = {
                e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key,
                         e.value_from.secret_key_ref.optional)
                for e in base.env or [] if e.value_from and e.value_from.secret_key_ref
            }
            env_from = tuple(f.secret_ref.name for f in base.env_from or [] if f.secret_ref)
            if env_from:
                refs["envFrom"] = env_from
            self.seen.setdefault(pod.metadata.labels["mlship.io/step"], {}).update(refs)


def train(release: Release, airflow: Airflow, dataset: str, model: str) -> str:
    """One successful mlship_training run of a regression on `dataset`; its run id."""
    envs = SecretEnvs(release)
    run_id = airflow.trigger({"dataset": dataset, "target": "target", "task": "regression",
                              "model_name": model, "reason": "e2e sources"})
    airflow.require_success(run_id, airflow.wait_run(run_id, timeout=1200, on_poll=envs.poll))
    # the Secrets the release names from its install on (the chart's values) reach the ingest pod
    # only (no score step here), the alerts' the register pod only, read by the kubelet
    assert envs.seen.get("ingest") == {
        "MLSHIP_SOURCE_HEADERS": (SOURCE_HEADERS_SECRET, SOURCE_HEADERS_KEY, False),
        "envFrom": (SOURCE_ENV_SECRET,),
    }, envs.seen
    assert envs.seen.get("register") == {"MLSHIP_ALERT_WEBHOOK_URL": (ALERTS_SECRET, "url", False)}, envs.seen
    assert not any(refs for step, refs in envs.seen.items() if step not in ("ingest", "register")), envs.seen
    return run_id


@dataclass
class Lineage:
    tags: dict[str, str]  # the parent run's
    version: Any  # the model version the run registered


def lineage(mlflow: MlflowClient, run_id: str, model: str) -> Lineage:
    """The parent MLflow run of a DAG run, and the one version it registered."""
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_id}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, f"parent runs of {run_id}: {[r.info.run_id for r in parents]}"
    (version,) = mlflow.search_model_versions(f"name = '{model}' and tags.`{TAG_RUN_KEY}` = '{run_id}'")
    return Lineage(dict(parents[0].data.tags), version)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]  # mlship.ml.datasets.content_digest


def test_a_json_api_behind_a_key_and_a_dvc_file_at_two_tags_train_with_their_lineage(
    release: Release, site: Site,
) -> None:
    with release.airflow() as airflow:
        json_run = train(release, airflow, site.json_source, "diabetes-json")
        dvc_runs = {tag: train(release, airflow, site.dvc_source(tag), "diabetes-dvc") for tag in site.data}

    with release.mlflow_client() as mlflow:
        api = lineage(mlflow, json_run, "diabetes-json")
        # the source string (URL, records path, mapping) is the lineage; the digest is of the bytes
        assert api.tags["mlship.dataset_source"] == site.json_source
        assert api.tags["mlship.dataset_digest"] == digest(site.api_body)
        assert api.version.tags["mlship.dataset_digest"] == digest(site.api_body)
        assert api.version.tags["mlship.task"] == "regression"
        assert "mlship.dataset_commit" not in api.tags
        dvc = {tag: lineage(mlflow, run_id, "diabetes-dvc") for tag, run_id in dvc_runs.items()}

    for tag, found in dvc.items():
        data = site.data[tag]
        assert {k: found.tags.get(k) for k in (
            "mlship.dataset_source", "mlship.dataset_repo", "mlship.dataset_path", "mlship.dataset_commit",
            "mlship.dataset_dvc_md5", "mlship.dataset_digest")} == {
            "mlship.dataset_source": site.dvc_source(tag),
            "mlship.dataset_repo": f"{site.base}/repo.git",
            "mlship.dataset_path": "data.csv",
            "mlship.dataset_commit": site.commits[tag],  # the commit this test made and tagged
            "mlship.dataset_dvc_md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "mlship.dataset_digest": digest(data),
        }, tag
        assert found.version.tags["mlship.dataset_digest"] == digest(data), tag
    assert dvc["v1"].tags["mlship.dataset_digest"] != dvc["v2"].tags["mlship.dataset_digest"]
    assert dvc["v1"].tags["mlship.dataset_commit"] != dvc["v2"].tags["mlship.dataset_commit"]
    print(f"\nJSON API ({site.api_records} records) -> diabetes-json v{api.version.version}; "
          f"DVC v1 {site.commits['v1'][:12]} -> diabetes-dvc v{dvc['v1'].version.version}, "
          f"v2 {site.commits['v2'][:12]} -> v{dvc['v2'].version.version}")
