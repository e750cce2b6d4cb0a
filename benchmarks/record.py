"""Event-record benchmark: how many events per second `python -m mlship.events.record` moves from a
real Kafka broker into Parquet in a real MLflow server's artifact store on this machine, and how
long read_record then takes to read them back.

    .venv/bin/python benchmarks/record.py [--predictions 200000] [--labels 60000]

A single-node KRaft broker from tests/kafkakit.py and an `mlship server` from hack/devkit.py
(SQLite, proxied artifacts on local disk) on 127.0.0.1. The events (iris rows) are produced
first; then the consumer starts with its defaults (flush every 20,000 events or 10 s) and the
clock runs from its partitions being assigned to its last commit covering every event, so the
figure is stored-and-committed events per second, the consumer's backlog throughput. Broker,
MLflow server and consumer share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hack")]
from devkit import MlflowServer, stop_process, wait_for  # noqa: E402
from kafkakit import KafkaBroker  # noqa: E402

from mlship.events import reader, schema  # noqa: E402

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def when(line: str) -> float:
    match = STAMP.match(line)
    if match is None:
        raise ValueError(f"no time stamp in {line!r}")
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(bootstrap: str, topics: tuple[str, str], model: str, n_pred: int, n_lab: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    now = time.time() - 3600

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                return
            except BufferError:
                p.poll(0.05)

    for i in range(n_pred):
        inputs = dict(zip(FEATURES, (5.1 + i % 7 * 0.1, 3.5, 1.4, 0.2), strict=True))
        send(topics[0], schema.key(f"r{i}", 0), schema.prediction(f"r{i}", 0, now + i * 0.01, model, "1",
                                                                   inputs, i % 3))
    for i in range(n_lab):
        label = schema.Label(f"r{i * 3}", 0, i % 3, now + i * 0.03 + 60, model)
        send(topics[1], schema.key(label.request_id, 0), label.encode())
    if p.flush(120):
        raise RuntimeError("the producer did not deliver every event within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", type=int, default=200_000)
    ap.add_argument("--labels", type=int, default=60_000)
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    topics, model = (f"p-{tag}", f"l-{tag}"), f"iris-{tag}"
    with tempfile.TemporaryDirectory(prefix="mlship-bench-record-") as tmp:
        home = Path(tmp)
        (home / "kafka").mkdir()
        (home / "mlflow").mkdir()
        with KafkaBroker.start(home / "kafka") as broker, MlflowServer(home / "mlflow") as server:
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            for f in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
                f.result(30)
            t0 = time.monotonic()
            produce(broker.bootstrap, topics, model, args.predictions, args.labels)
            print(f"produced {args.predictions:,} predictions and {args.labels:,} labels in "
                  f"{time.monotonic() - t0:.1f} s", flush=True)
            log = home / "record.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mlship.events.record", "--bootstrap-servers", broker.bootstrap,
                     "--tracking-uri", server.uri, "--predictions-topic", topics[0],
                     "--labels-topic", topics[1]],
                    stdout=out, stderr=subprocess.STDOUT,
                )
            total = args.predictions + args.labels
            want = f"totals: predictions {args.predictions}, labels {args.labels},"
            try:
                wait_for("every event stored", lambda: want in log.read_text(), 900, 0.5, retry=())
                wait_for("its commit", lambda: log.read_text().split(want, 1)[1].count(" committed ") >= 1,
                         60, 0.2, retry=())
                cpu = cpu_of(proc.pid)
            finally:
                stop_process(proc)
            lines = log.read_text().splitlines()
            start = when(next(x for x in lines if " assigned " in x))
            end = when([x for x in lines if " committed " in x][-1])
            flushes = [x for x in lines if " flushed " in x]
            print(f"consumer: {total:,} events stored and committed in {end - start:.1f} s = "
                  f"{total / (end - start):,.0f} events/s; {len(flushes)} flushes; "
                  f"consumer CPU {cpu:.1f} s ({cpu / total * 1e6:.0f} us/event)")
            t0 = time.monotonic()
            rec = reader.read_record(server.uri, model, since=0)
            took = time.monotonic() - t0
            print(f"read_record: {len(rec.rows):,} rows ({rec.rows['label'].notna().sum():,} labelled) "
                  f"in {took:.1f} s = {len(rec.rows) / took:,.0f} rows/s")
            if len(rec.rows) != args.predictions:
                raise SystemExit(f"read {len(rec.rows)} rows back, not {args.predictions}")


if __name__ == "__main__":
    main()
