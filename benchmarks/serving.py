"""Serving benchmark: mlship's server scoring with scikit-learn and with the model's compiled form
vs `mlflow models serve` vs MLServer (adaptive batching), mlship with its inference log on
(every request logged to MLflow) or its prediction events on (every request's row produced to
Kafka) next to off, and mlship carrying a canary route next to mlship carrying none.

Same model (a 100-tree random forest on iris, in a Pipeline with the ColumnTransformer mlship's
pipelines build: median imputer + scaler on the numeric columns), same CPU, single-row JSON
requests, 1 / 8 / 64 concurrent clients, one run each; prints requests/s, p50, p99 and the
servers' CPU ms per request, and the ratios issue 14's and issue 16's targets are stated in.

    .venv/bin/python benchmarks/serving.py [--duration 15] [--clients 1,8,64]
        [--servers mlship,mlship-compiled,mlship-log,mlship-routed,mlflow,mlserver]
        (also: mlship-events, floor)

`mlship` is the scikit-learn path: the model served from a local path, no registry record, so
no compiled form. `mlship-compiled` serves the same fitted model from the registry of an
`mlflow server` the script starts on 127.0.0.1: logged as the train step logs it, registered and
compiled by the register step's own code (mlship.steps.register.compile_version: parity on all
150 iris rows and their missing-value probes, the compiled artifact and the version's tags); the
script aborts unless parity held with 0 mismatches and the server's /metadata says it scores with
the compiled form.

`floor` is no model server at all: mlship's HTTP stack (uvicorn, uvloop, httptools, Starlette)
answering each body from a table of the right answers, no JSON parsing, no model. It is what a
request costs before any of mlship's own work: the figure the 1-client latency can approach.

`mlship-log` is mlship with MLSHIP_INFERENCE_LOG_SAMPLE_RATE=1, writing to that `mlflow server`
(SQLite, proxied artifacts), on the same CPUs. `mlship-events` is
mlship with MLSHIP_INFERENCE_LOG_SAMPLE_RATE=1 and MLSHIP_KAFKA_BOOTSTRAP_SERVERS: a prediction
event per request (gathered into one message per 50 ms) to a Kafka broker the script starts on
127.0.0.1 (tests/kafkakit.py: needs Java and hack/kafka-jars), on the same CPUs too.

`mlship-routed` is `mlship` (same model from the same local path, same settings) started with
MLSHIP_ROUTING_TOKEN and carrying a canary route (docs/serving-routing.md): PUT /admin/routing
sends 10% of /invocations to a candidate, a second mlship server on the same CPUs serving the same
fitted pipeline registered as a version of its own in that `mlflow server` (no compiled form: it
scores with scikit-learn too), so its answers carry the X-Model-Version the route names and the
stable server takes them. The stable server is measured; the summary prints its p99 minus
`mlship`'s at each concurrency (issue 16: the routing must not cost the stable path more than
2 ms of p99 at 64 clients) and, from its GET /admin/routing report after the run, the share of
the answers the candidate gave. Its CPU figure is the stable server's; the candidate's is printed
apart. The route is pushed before its 150-row check, which must see candidate answers and no
candidate error, and pushed again under a new rollout id (new counts) before the measurements.

Needs `wrk` (Debian: apt-get install -y wrk); uv comes through hack/uv. MLServer 1.7.1 conflicts with the
project's lock, so it is installed into its own venv under the cache dir (made on first run).
Every server binds 127.0.0.1 only. Before its speed counts, every server must answer all 150
iris rows exactly as the in-process scikit-learn pipeline does (a line per server says so); past
that, this prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
from devkit import MlflowServer, free_port, stop_process, wait_http  # noqa: E402

MLSERVER_VERSION = "1.7.1"
UV = str(REPO / "hack" / "uv")  # uv at the version mlship pins, installed on first use
MODEL_NAME = "iris"
TREES = 100
SEED = 0
ROUTE_SHARE = 0.1  # mlship-routed's canary share

# Trains the same pipeline in whichever interpreter runs it (ours, or MLServer's venv, which has
# no mlship), so each server gets a model made by its own scikit-learn. Plain scikit-learn classes
# only, in the shape mlship.ml.estimators.model_pipeline builds (ColumnTransformer: median imputer
# + scaler on the numeric columns; then the estimator), which mlship.ml.compiled compiles; fitted
# on a numpy array, the ColumnTransformer selects the same columns by position.
TRAIN = textwrap.dedent(
    f"""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def train(as_numpy=False):
        X, y = load_iris(return_X_y=True, as_frame=True)
        columns = list(X.columns)
        if as_numpy:
            X, columns = X.to_numpy(), list(range(X.shape[1]))
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        steps = [("preprocess", ColumnTransformer([("numeric", numeric, columns)], remainder="drop")),
                 ("model", RandomForestClassifier(n_estimators={TREES}, random_state={SEED}))]
        return Pipeline(steps).fit(X, y)
    """
)


@dataclass
class Result:
    server: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float  # CPU time of the server's processes per request, while measured

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Target:
    name: str
    url: str  # POST endpoint
    ready_url: str
    bodies: list[str]  # single-row JSON bodies, one per iris row
    check: Callable[[dict], list[int]]  # response JSON -> predicted labels
    pgid: int = 0  # the server's process group, once started
    predictor: str | None = None  # an mlship server's /metadata predictor must be this


@dataclass
class Canary:
    """mlship-routed's candidate server, and the route the stable server is given."""

    token: str  # the stable server's MLSHIP_ROUTING_TOKEN
    candidate: Target
    cmd: list[str]
    env: dict[str, str]  # MLSHIP_MODEL_VERSION is added once the candidate is registered
    version: str = ""

    def route(self, rollout: str) -> dict[str, Any]:
        return {
            "rollout": rollout, "candidate": self.candidate.url.removesuffix("/invocations"),
            "version": self.version, "share": ROUTE_SHARE, "mode": "canary",
        }  # fmt: skip


def run(cmd: list[str], **kw) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def iris_rows() -> tuple[list[str], list[list[float]], list[int]]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return list(X.columns), X.to_numpy().tolist(), y.tolist()


# --- the three servers ------------------------------------------------------------------------


def prepare_mlflow_model(cache: Path) -> tuple[Path, Any]:
    """The fitted pipeline, and it saved as an MLflow model (what mlship and mlflow serve)."""
    import mlflow.sklearn

    from mlship.ml.estimators import SKOPS_TRUSTED_TYPES

    namespace: dict = {}
    exec(TRAIN, namespace)  # noqa: S102 - our own constant source
    model = namespace["train"]()
    path = cache / "mlflow-model"
    shutil.rmtree(path, ignore_errors=True)
    from sklearn.datasets import load_iris

    X, _ = load_iris(return_X_y=True, as_frame=True)
    mlflow.sklearn.save_model(model, path, input_example=X.head(3), skops_trusted_types=SKOPS_TRUSTED_TYPES)
    return path, model


def register_compiled(tracking_uri: str, model: Any, cache: Path) -> str:
    """Logs `model` (the very pipeline the other servers serve) as the train step logs it,
    registers it, and compiles it, checks parity, logs the compiled form and tags the version
    with the register step's own code; returns the version. Aborts unless parity held on every
    row with no mismatch: mlship-compiled must measure the compiled form."""
    import mlflow
    from sklearn.datasets import load_iris

    from mlship import names
    from mlship.mlflow_io import tracking
    from mlship.steps import register, train

    X, y = load_iris(return_X_y=True, as_frame=True)
    client = tracking.connect(tracking_uri)
    mlflow.set_experiment(f"bench-compiled-{int(time.time())}")
    with mlflow.start_run() as run:
        info = train.log_model(model, X)
        holdout = cache / "holdout.parquet"  # the parity rows: all of iris
        X.assign(target=y).to_parquet(holdout)
        holdout_uri = tracking.log_file(run.info.run_id, holdout, "featurize")
    task = "classification"
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={names.TAG_TASK: task})
    tags = register.compile_version(client, version, info.model_uri, holdout_uri, task)
    for tag, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, version.version, tag, value)
    detail = tags[names.TAG_COMPILED_DETAIL]
    print(f"  mlship-compiled: {MODEL_NAME} v{version.version} compiled, {detail}", flush=True)
    if tags[names.TAG_COMPILED] != names.PARITY_HELD or tags.get(names.TAG_PARITY_MISMATCHES) != "0":
        raise RuntimeError(f"mlship-compiled: the compiled form cannot be benchmarked: {detail}")
    if int(tags[names.TAG_PARITY_ROWS]) < len(X):
        raise RuntimeError(f"mlship-compiled: parity checked {tags[names.TAG_PARITY_ROWS]} rows, "
                           f"not all {len(X)} of iris")
    return str(version.version)


def register_candidate(tracking_uri: str, model: Any) -> str:
    """Logs `model` (the very pipeline `mlship` serves from its local path) as the train step logs
    it and registers it, with no compiled form: mlship-routed's candidate, which scores with
    scikit-learn like the stable server and answers with this version's X-Model-Version, the one
    its route names. Returns the version."""
    import mlflow
    from sklearn.datasets import load_iris

    from mlship.steps import train

    X, _ = load_iris(return_X_y=True, as_frame=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"bench-routed-{int(time.time())}")
    with mlflow.start_run():
        info = train.log_model(model, X)
    version = str(mlflow.register_model(info.model_uri, MODEL_NAME).version)
    print(f"  mlship-routed: candidate {MODEL_NAME} v{version} registered", flush=True)
    return version


def admin_routing(target: Target, token: str, route: dict[str, Any] | None = None) -> Any:
    """The server's routing report (mlship.traffic.Report), after pushing `route` if given."""
    from mlship.traffic import ROUTING_PATH, parse_report

    url = target.url.replace("/invocations", ROUTING_PATH)
    headers = {"Authorization": f"Bearer {token}"}
    if route is None:
        response = requests.get(url, headers=headers, timeout=10)
    else:
        response = requests.put(url, json=route, headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"{target.name}: {response.request.method} {url}: HTTP "
                           f"{response.status_code}: {response.text[:500]}")
    return parse_report(response.json())


def prepare_mlserver(cache: Path, port: int, grpc_port: int, metrics_port: int) -> tuple[Path, Path]:
    venv = cache / f"mlserver-{MLSERVER_VERSION}-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run([UV, "venv", "-q", "--python", sys.executable, str(venv)])
        run(
            [
                UV,
                "pip",
                "install",
                "-q",
                "--python",
                str(python),
                f"mlserver=={MLSERVER_VERSION}",
                f"mlserver-sklearn=={MLSERVER_VERSION}",
                # MLServer 1.7.1's inference workers call asyncio.get_event_loop() with no
                # loop set, which uvloop >= 0.22 turned into an error: use the uvloop of its time.
                "uvloop==0.21.0",
            ]
        )
    models = cache / "mlserver-models"
    model_dir = models / MODEL_NAME
    shutil.rmtree(models, ignore_errors=True)
    model_dir.mkdir(parents=True)
    # Trained on a numpy array: MLServer's V2 tensors carry no column names, and a model fitted
    # on a DataFrame would warn about missing feature names on every call.
    dump = (
        TRAIN + f"\nimport joblib\njoblib.dump(train(as_numpy=True), {str(model_dir / 'model.joblib')!r})\n"
    )
    subprocess.run([str(python), "-c", dump], check=True)
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
                "max_batch_size": 64,
                "max_batch_time": 0.005,
            }
        )
    )
    (models / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "debug": False,
            }
        )
    )
    return venv, models


# The floor: the same HTTP stack as mlship (uvicorn, uvloop, httptools, Starlette), answering each
# request's body from a table of the right answers, so no JSON parsing and no model: what a
# request costs before mlship does any work of its own.
FLOOR = textwrap.dedent(
    """
    import json, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    answers = {k.encode(): v.encode() for k, v in json.load(open(sys.argv[1])).items()}

    async def invocations(request):
        return Response(answers[await request.body()], media_type="application/json")

    async def health(request):
        return Response(b"ok")

    app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False, server_header=False)
    """
)


def mlflow_bodies(columns: list[str], rows: list[list[float]]) -> list[str]:
    return [json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}) for row in rows]


def v2_bodies(rows: list[list[float]]) -> list[str]:
    return [
        json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": row}]})
        for row in rows
    ]


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes in a process group (all their threads)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def started(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[int]:
    with open(log, "wb") as out:
        # Own session: the servers fork workers; the whole group is stopped by its id below.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(ready_url, 300, proc, interval=0.5, log=log)
            yield proc.pid  # == its process group id
        finally:
            stop_process(proc, timeout=30, group=True)


# --- load generation --------------------------------------------------------------------------

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{bodies}
}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.0f %.0f %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk(target: Target, clients: int, seconds: float, script: Path) -> Result:
    cmd = [
        "wrk",
        f"-t{min(clients, 2)}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        target.url,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    n, duration_us, p50, p99, errors = map(int, match.groups())
    return Result(target.name, clients, n, duration_us / 1e6, p50 / 1000, p99 / 1000, errors, 0.0)


def lua_script(target: Target, cache: Path) -> Path:
    script = cache / f"{target.name}.lua"
    bodies = ",\n".join(f"[==[{b}]==]" for b in target.bodies)
    script.write_text(LUA.format(bodies=bodies))
    return script


def measure(target: Target, clients: int, seconds: float, warmup: float, script: Path) -> Result:
    wrk(target, clients, warmup, script)
    cpu = cpu_seconds(target.pgid)
    result = wrk(target, clients, seconds, script)
    result.cpu_ms = (cpu_seconds(target.pgid) - cpu) * 1000 / max(result.requests, 1)
    print(
        f"  {target.name:<15} {clients:>3} clients: {result.rps:8.1f} req/s  "
        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
        f"CPU {result.cpu_ms:5.2f} ms/req  errors {result.errors}",
        flush=True,
    )
    return result


def verify(target: Target, expected: list[int]) -> None:
    """Before its speed counts, a server must answer every iris row (one request each) as the
    in-process scikit-learn pipeline predicts it, and an mlship server must score with the
    predictor its variant is about (its /metadata says which, and why)."""
    if target.predictor is not None:
        meta = requests.get(target.url.replace("/invocations", "/metadata"), timeout=30).json()
        print(f"  {target.name:<15} predictor: {meta.get('predictor')} ({meta.get('predictor_reason')})",
              flush=True)
        if meta.get("predictor") != target.predictor:
            raise RuntimeError(
                f"{target.name} scores with {meta.get('predictor')!r}, not {target.predictor!r}: "
                f"{meta.get('predictor_reason')}"
            )
    got: list[int] = []
    with requests.Session() as session:
        for body in target.bodies:
            response = session.post(
                target.url, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            response.raise_for_status()
            got += target.check(response.json())
    differ = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    print(f"  {target.name:<15} answers: {len(expected) - len(differ)} of {len(expected)} iris rows "
          "equal to scikit-learn's in-process predictions", flush=True)
    if differ:
        raise RuntimeError(f"{target.name} differs from scikit-learn on {len(differ)} rows: {differ[:10]}")


def check_route(target: Target, canary: Canary) -> None:
    """After the 150-row check under the route: some of those answers were the candidate's (a
    candidate answer the router refused, e.g. for its X-Model-Version, is a candidate error and
    the client gets the stable answer, so the check alone would not tell)."""
    report = admin_routing(target, canary.token)
    candidate = report.candidate
    print(f"  {target.name:<15} route: canary {ROUTE_SHARE:.0%} to {canary.candidate.name} "
          f"v{canary.version}: {candidate.requests} of those answers from it, {candidate.errors} "
          f"candidate errors", flush=True)
    if candidate.requests == 0 or candidate.errors:
        raise RuntimeError(f"{target.name}: the route to {canary.candidate.url} does not work "
                           f"(see {canary.candidate.name}.log and {target.name}.log)")


def log_counts(target: Target) -> dict[str, float]:
    """The logging server's own count of rows written, dropped and waiting: proof it logged."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(target.url.replace("/invocations", "/metrics"), timeout=10).text
    return {
        sample.name.removeprefix("mlship_inference_log_"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("mlship_inference_log_")
    }


def event_counts(target: Target) -> dict[str, float]:
    """The producing server's own count of events produced, delivered, dropped (all reasons)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(target.url.replace("/invocations", "/metrics"), timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("mlship_events_"):
                name = sample.name.removeprefix("mlship_events_")
                counts[name] = counts.get(name, 0.0) + sample.value
    return counts


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure every server at every concurrency this many times, interleaved; the "
        "table shows medians (several short rounds resist drifting background load best)",
    )
    parser.add_argument(
        "--servers", default="mlship,mlship-compiled,mlship-log,mlship-routed,mlflow,mlserver",
        help="any of mlship, mlship-compiled, mlship-log, mlship-events, mlship-routed, mlflow, "
        "mlserver, floor (default: %(default)s)",
    )
    parser.add_argument(
        "--broker-nice", type=int, default=0,
        help="niceness of mlship-events' Kafka broker: 19 stands in for a broker on cores of its own "
        "(in a cluster it is another pod; here it would take serving's 2 cores); default 0",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlship" / "bench",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    cache: Path = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)

    columns, rows, _ = iris_rows()
    model_path, model = prepare_mlflow_model(cache)
    import pandas as pd

    expected = [int(v) for v in model.predict(pd.DataFrame(rows, columns=columns))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: list[Result] = []
    py = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable

    def from_predictions(doc: dict) -> list[int]:
        return doc["predictions"]

    launches: list[tuple[Target, list[str], dict[str, str]]] = []

    def mlship_server(
        name: str, extra_env: dict[str, str], predictor: str = "sklearn", local: bool = True
    ) -> tuple[Target, list[str], dict[str, str]]:
        """One mlship server on a free port: the same settings for every variant, plus extra_env;
        serving the local MLflow model unless not `local`."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        target = Target(
            name, f"{base}/invocations", f"{base}/health", mlflow_bodies(columns, rows), from_predictions,
            predictor=predictor,
        )
        server_env = {
            **env,
            **({"MLSHIP_MODEL_URI": str(model_path)} if local else {}),
            "PORT": str(port),
            "MLSHIP_HOST": "127.0.0.1",
            "MLSHIP_MAX_BATCH_SIZE": "64",
            "MLSHIP_LOG_LEVEL": "WARNING",
            **extra_env,
        }
        return target, [py, "-m", "mlship.serving"], server_env

    def launch_mlship(
        name: str, extra_env: dict[str, str], predictor: str = "sklearn", local: bool = True
    ) -> dict[str, str]:
        """mlship_server, measured. Returns its environment (the registry variant's version is
        added once registered)."""
        launches.append(mlship_server(name, extra_env, predictor, local))
        return launches[-1][2]

    if "mlship" in servers:
        launch_mlship("mlship", {})

    tracking: MlflowServer | None = None
    if {"mlship-log", "mlship-compiled", "mlship-routed"} & set(servers):
        store = cache / "tracking"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()
        # in a process group of its own: its CPU time is counted by the group's id
        tracking = MlflowServer(store, log=cache / "tracking.log", timeout=300, python=py, env=env,
                                new_session=True)
    compiled_env: dict[str, str] | None = None
    if "mlship-compiled" in servers and tracking is not None:
        # MLSHIP_MODEL_VERSION is set once the model is registered, when the tracking server runs
        compiled_env = launch_mlship("mlship-compiled", {
            "MLFLOW_TRACKING_URI": tracking.uri,
            "MLSHIP_MODEL_NAME": MODEL_NAME,
        }, predictor="compiled", local=False)
    if "mlship-log" in servers and tracking is not None:
        launch_mlship("mlship-log", {
            "MLFLOW_TRACKING_URI": tracking.uri,
            "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1",
            "MLSHIP_INFERENCE_LOG_EXPERIMENT": f"bench-{int(time.time())}",
        })
    canary: Canary | None = None
    if "mlship-routed" in servers and tracking is not None:
        # the candidate: started, not measured; MLSHIP_MODEL_VERSION is set once it is registered
        candidate, candidate_cmd, candidate_env = mlship_server("mlship-candidate", {
            "MLFLOW_TRACKING_URI": tracking.uri,
            "MLSHIP_MODEL_NAME": MODEL_NAME,
            # as the stable one (a local path): no inference log, whose writes to the tracking
            # server would take the shared CPUs from the server measured
            "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "0",
        }, local=False)
        canary = Canary(secrets.token_urlsafe(24), candidate, candidate_cmd, candidate_env)
        launch_mlship("mlship-routed", {"MLSHIP_ROUTING_TOKEN": canary.token})

    if "floor" in servers:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        bodies = mlflow_bodies(columns, rows)
        table = cache / "floor-answers.json"
        answers = {b: json.dumps({"predictions": [e]}) for b, e in zip(bodies, expected, strict=True)}
        table.write_text(json.dumps(answers))
        (cache / "floor.py").write_text(FLOOR)
        target = Target("floor", f"{base}/invocations", f"{base}/health", bodies, from_predictions)
        launches.append((target, [py, str(cache / "floor.py"), str(table), str(port)], env))

    if "mlflow" in servers:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        target = Target(
            "mlflow", f"{base}/invocations", f"{base}/ping", mlflow_bodies(columns, rows), from_predictions
        )
        cmd = [py, "-m", "mlflow", "models", "serve", "-m", str(model_path), "--env-manager", "local"]
        cmd += ["--workers", "1", "-h", "127.0.0.1", "-p", str(port)]
        # mlflow execs `uvicorn` from PATH: put the venv's bin first.
        launches.append((target, cmd, {**env, "PATH": f"{Path(py).parent}{os.pathsep}{env['PATH']}"}))

    if "mlserver" in servers:
        port = free_port()
        venv, models = prepare_mlserver(cache, port, free_port(), free_port())
        base = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}"
        target = Target(
            "mlserver",
            f"{base}/infer",
            f"{base}/ready",
            v2_bodies(rows),
            lambda doc: [int(v) for v in doc["outputs"][0]["data"]],
        )
        launches.append((target, [str(venv / "bin" / "mlserver"), "start", str(models)], env))

    broker = None
    if "mlship-events" in servers:  # last: the broker is stopped by the ExitStack below
        sys.path.insert(0, str(REPO / "tests"))
        from kafkakit import KafkaBroker

        home = cache / "kafka"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        # its own process group: its CPU is counted by its id
        broker = KafkaBroker.start(home, nice=args.broker_nice)
        launch_mlship("mlship-events", {
            "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1",
        })

    # All servers run at once and are measured in turn at each concurrency, so load from
    # anything else on the machine drifts over all of them alike. Idle, they cost next to nothing.
    logged: dict[str, float] = {}
    tracking_cpu = 0.0
    sent: dict[str, float] = {}
    broker_cpu = 0.0
    routed_report = None
    candidate_cpu = 0.0
    with ExitStack() as stack:
        if broker is not None:
            stack.enter_context(broker)
            broker_cpu = cpu_seconds(broker.proc.pid) if broker.proc is not None else 0.0
        tracking_pgid = 0
        if tracking is not None:
            tracking_pgid = stack.enter_context(tracking).proc.pid
        if compiled_env is not None and tracking is not None:
            compiled_env["MLSHIP_MODEL_VERSION"] = register_compiled(tracking.uri, model, cache)
        if canary is not None and tracking is not None:
            canary.version = canary.env["MLSHIP_MODEL_VERSION"] = register_candidate(tracking.uri, model)
            candidate = canary.candidate
            candidate.pgid = stack.enter_context(
                started(canary.cmd, canary.env, candidate.ready_url, cache / f"{candidate.name}.log")
            )
            verify(candidate, expected)
        for target, cmd, server_env in launches:
            target.pgid = stack.enter_context(
                started(cmd, server_env, target.ready_url, cache / f"{target.name}.log")
            )
            if canary is not None and target.name == "mlship-routed":
                admin_routing(target, canary.token, canary.route("bench/verify"))
                verify(target, expected)
                check_route(target, canary)
                # new counts for the measurements: the report read after them is theirs
                admin_routing(target, canary.token, canary.route("bench/measure"))
            else:
                verify(target, expected)
        scripts = {target.name: lua_script(target, cache) for target, _, _ in launches}
        tracking_cpu = cpu_seconds(tracking_pgid) if tracking_pgid else 0.0
        candidate_cpu = cpu_seconds(canary.candidate.pgid) if canary is not None else 0.0
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1} of {args.rounds}", flush=True)
            for n in clients:
                for target, _, _ in launches:
                    results.append(measure(target, n, args.duration, args.warmup, scripts[target.name]))
        logging = next((t for t, _, _ in launches if t.name == "mlship-log"), None)
        if logging is not None:
            time.sleep(12)  # the last interval's flush
            logged = log_counts(logging)
            tracking_cpu = cpu_seconds(tracking_pgid) - tracking_cpu
        producing = next((t for t, _, _ in launches if t.name == "mlship-events"), None)
        if producing is not None and broker is not None and broker.proc is not None:
            time.sleep(2)  # the last events' acknowledgements
            sent = event_counts(producing)
            broker_cpu = cpu_seconds(broker.proc.pid) - broker_cpu
        routed = next((t for t, _, _ in launches if t.name == "mlship-routed"), None)
        if routed is not None and canary is not None:
            routed_report = admin_routing(routed, canary.token)
            candidate_cpu = cpu_seconds(canary.candidate.pgid) - candidate_cpu

    report(results, clients, servers, args.rounds)
    if logged:
        written = logged.get("rows_total", 0.0)
        print(
            f"\nmlship-log's inference log: {written:.0f} rows written, "
            f"{logged.get('dropped_rows_total', 0):.0f} dropped, "
            f"{logged.get('flush_failures_total', 0):.0f} failed flushes, "
            f"{logged.get('buffered_rows', 0):.0f} waiting; the MLflow server spent "
            f"{tracking_cpu:.1f} CPU-s taking them ({tracking_cpu * 1e6 / max(written, 1.0):.0f} us/row)"
        )
    if sent:
        delivered = sent.get("delivered_total", 0.0)
        print(
            f"\nmlship-events' prediction events: {sent.get('produced_total', 0):.0f} produced, "
            f"{delivered:.0f} delivered, {sent.get('dropped_total', 0):.0f} dropped, "
            f"{sent.get('delivery_failures_total', 0):.0f} failed, {sent.get('queued', 0):.0f} "
            f"queued; the Kafka broker spent {broker_cpu:.1f} CPU-s over the whole run, idle "
            f"included ({broker_cpu * 1e6 / max(delivered, 1.0):.0f} us/event)"
        )
    if routed_report is not None:
        stable, candidate = routed_report.stable, routed_report.candidate
        total = stable.requests + candidate.requests
        print(
            f"\nmlship-routed's canary route (share {routed_report.share:.0%}): the candidate gave "
            f"{candidate.requests} of the {total} answers ({candidate.requests / max(total, 1):.1%}), "
            f"{candidate.errors} candidate errors, {candidate.agreed} of {candidate.compared} rows "
            f"agreed with the stable server's; the candidate server spent {candidate_cpu:.1f} CPU-s "
            f"over the measurements, idle included "
            f"({candidate_cpu * 1000 / max(candidate.requests, 1):.2f} ms per request it got)"
        )


def median_results(results: list[Result]) -> dict[tuple[str, int], Result]:
    """Per (server, clients), the median of each figure over the rounds."""
    from statistics import median

    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.server, r.clients), []).append(r)
    out = {}
    for key, rs in groups.items():
        rps = median(r.rps for r in rs)
        out[key] = Result(
            key[0], key[1], round(rps * 1000), 1000.0,
            median(r.p50_ms for r in rs), median(r.p99_ms for r in rs),
            sum(r.errors for r in rs), median(r.cpu_ms for r in rs),
        )
    return out


def report(results: list[Result], clients: list[int], servers: list[str], rounds: int = 1) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    runs = "one run" if rounds == 1 else f"medians of {rounds} interleaved rounds"
    print(f"\n{os.cpu_count()} CPUs ({cpu}); single-row JSON over loopback; wrk; {runs}\n")
    by = median_results(results)
    head = "| clients | " + " | ".join(
        f"{s} req/s | p50 ms | p99 ms | CPU ms/req" for s in servers
    ) + " |"
    print(head)
    print("|" + "---|" * (1 + 4 * len(servers)))
    for n in clients:
        cells = []
        for s in servers:
            r = by.get((s, n))
            cells.append(
                f"{r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.cpu_ms:.2f}"
                + (f" ({r.errors} err)" if r.errors else "")
                if r
                else "- | - | - | -"
            )
        print(f"| {n} | " + " | ".join(cells) + " |")
    ours_hi, ms_hi = by.get(("mlship", max(clients))), by.get(("mlserver", max(clients)))
    if ours_hi and ms_hi:
        print(
            f"\nat {max(clients)} clients: mlship/MLServer = {ours_hi.rps / ms_hi.rps:.2f}x "
            f"(target >= 1.5x), mlship p99 {ours_hi.p99_ms:.0f} ms (target <= 100 ms)"
        )
    for n in clients:
        for name, what in (("mlship-log", "inference log"), ("mlship-events", "prediction events")):
            off, on = by.get(("mlship", n)), by.get((name, n))
            if off and on:
                print(
                    f"at {n} clients, {what} on vs off: {on.rps / off.rps:.2f}x req/s, "
                    f"p50 {on.p50_ms - off.p50_ms:+.1f} ms, p99 {on.p99_ms - off.p99_ms:+.1f} ms, "
                    f"CPU {on.cpu_ms - off.cpu_ms:+.3f} ms/req"
                    + (" (target >= 0.95x)" if name == "mlship-events" else "")
                )
    for n in clients:
        plain, routed = by.get(("mlship", n)), by.get(("mlship-routed", n))
        if plain and routed:
            print(
                f"at {n} clients, mlship-routed (canary {ROUTE_SHARE:.0%}) vs mlship: "
                f"p99 {routed.p99_ms - plain.p99_ms:+.1f} ms (issue 16: <= 2 ms at 64 clients), "
                f"p50 {routed.p50_ms - plain.p50_ms:+.1f} ms, {routed.rps / plain.rps:.2f}x req/s, "
                f"CPU {routed.cpu_ms - plain.cpu_ms:+.3f} ms/req"
            )
    ours_lo = by.get(("mlship", min(clients)))
    others = [
        by[(s, min(clients))]
        for s in servers
        if not s.startswith("mlship") and (s, min(clients)) in by
    ]
    if ours_lo and others:
        best = max(others, key=lambda r: r.rps)
        print(
            f"at {min(clients)} client: mlship {ours_lo.rps:.0f} req/s vs best other "
            f"{best.server} {best.rps:.0f} req/s (target: no worse)"
        )
    compiled_targets(by)


def compiled_targets(by: dict[tuple[str, int], Result]) -> None:
    """Issue 14's targets for the compiled form: at 1 client >= 10x mlflow's req/s with p99 <= 1 ms,
    at 64 clients >= 4x MLServer's with p99 <= 15 ms; and the compiled form vs scikit-learn in mlship."""
    for n, other, times, p99 in ((1, "mlflow", 10, 1), (64, "mlserver", 4, 15)):
        fast = by.get(("mlship-compiled", n))
        if fast is None:
            continue
        parts = [f"at {n} client{'s' if n > 1 else ''}: mlship-compiled {fast.rps:.0f} req/s, "
                 f"p99 {fast.p99_ms:.1f} ms (target <= {p99} ms)"]
        vs = by.get((other, n))
        if vs is not None:
            parts.append(f"{fast.rps / vs.rps:.1f}x {other} (target >= {times}x)")
        sklearn = by.get(("mlship", n))
        if sklearn is not None:
            parts.append(
                f"{fast.rps / sklearn.rps:.1f}x mlship with scikit-learn, CPU {fast.cpu_ms:.2f} vs "
                f"{sklearn.cpu_ms:.2f} ms/req"
            )
        print("; ".join(parts))


if __name__ == "__main__":
    main()
