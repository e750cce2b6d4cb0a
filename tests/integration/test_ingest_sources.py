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
from testkit import clean_env, local_http

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
    steps: Any, source: str, key: str, *, headers: str | None = json.dumps({"X-Api-Key": KEY}),
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
