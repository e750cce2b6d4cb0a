"""The ingest step CLI on a JSON API source: a local HTTP server answering JSON, a real MLflow server.

The request's headers come from $MLSHIP_SOURCE_HEADERS (in a pod: a Secret), never from the source.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from testkit import clean_env, git_dvc, local_http, make_dvc_repo

pytestmark = pytest.mark.integration

HEADERS_ENV = "MLSHIP_SOURCE_HEADERS"
KEY = "k-123"


def weather(n: int, shift: float = 0.0) -> bytes:
    rows = [
        {"dt": i, "main": {"temp": 10.0 + i + shift, "humidity": 50 + i},
         "weather": [{"main": "Rain" if i % 2 else "Clear"}]}
        for i in range(n)
    ]
    return json.dumps({"cod": "200", "city": {"name": "Oslo"}, "list": rows}).encode()


ANSWERS = {"/obs": weather(12), "/obs2": weather(12, shift=0.5)}


@pytest.fixture(scope="module")
def api():
    """/obs and /obs2 answer JSON when X-Api-Key is KEY (else 401); /busy is 503."""

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path in ANSWERS:
                code, body = (200, ANSWERS[path]) if self.headers.get("X-Api-Key") == KEY else (401, b"{}")
            else:
                code, body = 503, b"busy"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Api) as url:
        yield url


def ingest(
    steps: Any, source: str, key: str, *, headers: str | None = json.dumps({"127.0.0.1": {"X-Api-Key": KEY}}),
    code: int = 0, target: str = "target",
) -> tuple[dict[str, Any] | None, str]:
    """`python -m mlship.steps.ingest` as a pod runs it, $MLSHIP_SOURCE_HEADERS set to `headers`."""
    xcom = Path(steps.workdir) / f"{key}-ingest.json"
    env = clean_env(**({HEADERS_ENV: headers} if headers is not None else {}))
    proc = subprocess.run(
        [sys.executable, "-m", "mlship.steps.ingest", "--tracking-uri", steps.uri,
         "--pipeline-run-key", key, "--xcom-path", str(xcom), "--source", source, "--target", target],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    result = json.loads(xcom.read_text()) if xcom.exists() else None
    assert (result is not None) == (code == 0)
    return result, proc.stderr


def runs_of(uri: str, key: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mlship")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlship.pipeline_run_key` = '{key}'")


def test_a_json_api_is_ingested_with_its_lineage(steps, api):
    fragment = "#records=list&columns=temp:main.temp,humidity:main.humidity,target:weather.0.main"
    source = f"json+{api}/obs?city=oslo{fragment}"
    key = f"it-json-{uuid.uuid4().hex[:6]}"
    result, _ = ingest(steps, source, key)
    assert result["dataset_digest"] == hashlib.sha256(ANSWERS["/obs"]).hexdigest()[:32]
    assert (result["rows"], result["task"], result["dataset_name"]) == (12, "classification", "obs")

    client = MlflowClient(steps.uri)
    run = client.get_run(result["run_id"])
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.digest == result["dataset_digest"] and dataset.source_type == "http"
    # the URL fetched, with the records path and the mapping that were read from it
    assert json.loads(dataset.source) == {"url": f"{api}/obs?city=oslo{fragment}"}
    assert run.data.tags["mlship.dataset_source"] == source == run.data.params["source"]
    parent = client.get_run(result["parent_run_id"])
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == [result["dataset_digest"]]
    assert HEADERS_ENV not in json.dumps(run.data.params) and KEY not in json.dumps(run.data.tags)

    import mlflow

    stored = pd.read_parquet(
        mlflow.artifacts.download_artifacts(result["dataset_uri"], tracking_uri=steps.uri))
    assert list(stored.columns) == ["temp", "humidity", "target"]
    assert stored["temp"].tolist() == [10.0 + i for i in range(12)]

    other, _ = ingest(steps, f"json+{api}/obs2?city=oslo{fragment}", f"{key}-2")
    assert other["dataset_digest"] != result["dataset_digest"]


@pytest.mark.parametrize(
    ("path", "fragment", "headers", "code", "message"),
    [
        ("/obs", "#records=data.items&columns=t:main.temp,target:dt", None, 65,
         "records path 'data.items' matches nothing in the response; top-level keys: cod, city, list"),
        ("/obs", "#records=list&columns=t:main.pressure,target:dt", None, 65,
         "12 of 12 records lack field 'main.pressure' (column 't'; first: record 0); "
         "a trailing '?' on a path reads a missing field as null"),
        ("/obs", "#records=list&columns=t:main.temp,target:dt", "", 65,
         "cannot download {api}/obs: HTTP Error 401: Unauthorized"),
        # the key is configured for another host only: it is not sent here
        ("/obs", "#records=list&columns=t:main.temp,target:dt",
         json.dumps({"api.example.com": {"X-Api-Key": KEY}}), 65,
         "cannot download {api}/obs: HTTP Error 401: Unauthorized"),
        ("/obs", "#records=list&columns=t:main.temp,target:dt", '{"X-Api-Key": oops}', 65,
         "$MLSHIP_SOURCE_HEADERS is not valid JSON (at char 14)"),
        ("/busy", "#records=list&columns=t:main.temp,target:dt", None, 1,
         "cannot download {api}/busy: HTTP Error 503: Service Unavailable"),
        ("/obs", "#records=list", None, 65,
         "JSON source {api}/obs: no columns; add #columns=<name>:<path>,... "
         "(e.g. #records=list&columns=temp:main.temp,target:label)"),
    ],
)
def test_a_bad_json_source_fails_in_one_line_and_records_nothing(
    steps, api, path, fragment, headers, code, message,
):
    key = f"it-json-bad-{uuid.uuid4().hex[:6]}"
    kwargs = {} if headers is None else {"headers": headers}
    _, err = ingest(steps, f"json+{api}{path}{fragment}", key, code=code, **kwargs)
    assert err.strip().splitlines()[-1] == f"mlship ingest failed: {message.format(api=api)}"
    assert runs_of(steps.uri, key) == []  # no run, no dataset: nothing to pick up


# ------------------------------------------------------------------------------------------- DVC

DVC_V1 = b"x,y,target\n1.0,2,a\n2.0,3,b\n3.0,4,a\n4.0,5,b\n"
DVC_V2 = DVC_V1 + b"5.0,6,a\n6.0,7,b\n"


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """houses.csv tracked by DVC: tag v1 holds DVC_V1, main (HEAD) DVC_V2, read from the remote."""
    versions = {"v1": DVC_V1, "v2": DVC_V2}
    return make_dvc_repo(tmp_path_factory.mktemp("dvc-ingest"), "houses.csv", versions, "integration")


def test_a_dvc_file_is_ingested_per_revision_with_its_commit_and_md5(steps, dvc_repo):
    client = MlflowClient(steps.uri)
    seen = {}
    for rev, data in (("@v1", DVC_V1), ("", DVC_V2)):
        source = f"dvc:{dvc_repo}#houses.csv{rev}"
        key = f"it-dvc-{uuid.uuid4().hex[:6]}"
        result, _ = ingest(steps, source, key)
        commit = git_dvc(dvc_repo, "git", "rev-parse", f"{rev[1:] or 'HEAD'}^{{commit}}")
        assert result["dataset_digest"] == hashlib.sha256(data).hexdigest()[:32]
        assert (result["rows"], result["dataset_name"]) == (data.count(b"\n") - 1, "houses")
        lineage = {
            "mlship.dataset_repo": str(dvc_repo), "mlship.dataset_path": "houses.csv",
            "mlship.dataset_commit": commit,
            "mlship.dataset_dvc_md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        }
        for run_id in (result["run_id"], result["parent_run_id"]):
            tags = client.get_run(run_id).data.tags
            assert {k: tags[k] for k in lineage} == lineage
            assert tags["mlship.dataset_digest"] == result["dataset_digest"]
            assert tags["mlship.dataset_source"] == source
        (dataset_input,) = client.get_run(result["run_id"]).inputs.dataset_inputs
        assert json.loads(dataset_input.dataset.source) == {
            "tags": {"mlship.dataset_source": source, **lineage}}
        seen[rev] = (result["dataset_digest"], commit)
    assert seen["@v1"][0] != seen[""][0] and seen["@v1"][1] != seen[""][1]


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("houses.csv@nope", 65, "DVC repo {repo}: unknown revision 'nope'"),
        ("flats.csv@v1", 65, "flats.csv is not in DVC repo {repo}@{v1}"),
        (".gitignore@v1", 65, "unknown file type '(none)'"),
        ("houses.csv.dvc@v1", 65, "unknown file type '.dvc'"),
    ],
)
def test_a_bad_dvc_source_fails_in_one_line_and_records_nothing(steps, dvc_repo, target, code, message):
    key = f"it-dvc-bad-{uuid.uuid4().hex[:6]}"
    v1 = git_dvc(dvc_repo, "git", "rev-parse", "v1^{commit}")[:12]
    _, err = ingest(steps, f"dvc:{dvc_repo}#{target}", key, code=code)
    assert message.format(repo=dvc_repo, v1=v1) in err.strip().splitlines()[-1]
    assert runs_of(steps.uri, key) == []


def test_an_unreachable_dvc_remote_is_retried(steps, dvc_repo):
    store = dvc_repo.parent / "store"
    store.rename(dvc_repo.parent / "store.off")
    key = f"it-dvc-remote-{uuid.uuid4().hex[:6]}"
    try:
        _, err = ingest(steps, f"dvc:{dvc_repo}#houses.csv@v1", key, code=1)
    finally:
        (dvc_repo.parent / "store.off").rename(store)
    assert "from its DVC remote (not pushed, or the remote unreachable)" in err.strip().splitlines()[-1]
    assert runs_of(steps.uri, key) == []
