"""Prediction-event benchmark: how many events per second serving's producer path sustains into a
real Kafka broker on this machine (issue #15's target: >= 20,000/s).

    .venv/bin/python benchmarks/events.py [--seconds 10] [--rows 1] [--rounds 3]

It runs the real thing, `mlship.serving.events.EventProducer` (the same settings serving uses:
idempotent, lz4, acks=all, one message per 50 ms of events) with its background send thread,
against a single-node KRaft broker from tests/kafkakit.py (Apache Kafka's jars on the host's Java,
like the chart's broker without the container) on 127.0.0.1. Events are iris rows:
`predictions()` is called as a request would call it (one request of `--rows` rows per call:
encode each row, append it; the send thread gathers them into messages). The
caller only pauses when the local queue is nearly full, so nothing is dropped and the figure is
what is *delivered* (acknowledged by the broker) per second, end to end.

Printed: events/s delivered, the producing thread's cost per event (what a request pays), and
the broker's CPU per event. Broker and producer share the machine's cores. The broker's first
run includes the JVM warming up: the first round is a warm-up and is not counted.
The serving-level cost (req/s with events on vs off at 64 clients) is
`benchmarks/serving.py --servers mlship,mlship-events`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hack")]
from kafkakit import KafkaBroker  # noqa: E402

from mlship.serving.config import DEFAULT_KAFKA_LINGER_MS  # noqa: E402
from mlship.serving.events import EventProducer, producer_config  # noqa: E402
from mlship.serving.metrics import ServingMetrics  # noqa: E402
from mlship.serving.protocol import Table  # noqa: E402

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def tables(rows: int) -> tuple[list[Table], list[bytes]]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    out, answers = [], []
    for i in range(0, 150, rows):
        chunk = X[i : i + rows].tolist()
        out.append(Table(tuple([r[c] for r in chunk] for c in range(4)), len(chunk)))
        answers.append(("{\"predictions\":[" + ",".join(str(v) for v in y[i : i + rows]) + "]}").encode())
    return out, answers


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(broker: KafkaBroker, seconds: float, rows: int, queue: int) -> dict[str, float]:
    metrics = ServingMetrics("iris", "1")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    events = EventProducer(
        producer_config(broker.bootstrap, queue_max_messages=queue),
        metrics, model="iris", version="1", columns=COLUMNS,
        predictions_topic=topic, labels_topic=topic + "-labels", sample_rate=1.0,
        linger_s=DEFAULT_KAFKA_LINGER_MS / 1000,
    )  # fmt: skip
    events.start()
    batch, answers = tables(rows)
    # Warm the topic's metadata up (auto-created on first use) before the clock runs.
    events.predictions("warm-up", batch[0], answers[0])
    while metrics.registry.get_sample_value(
        "mlship_events_delivered_total", {"model_name": "iris", "model_version": "1", "topic": topic}
    ) != batch[0].n_rows:
        time.sleep(0.05)
    if broker.proc is None:
        raise RuntimeError("the broker is not running")
    broker_cpu = cpu_of(broker.proc.pid)
    produced, produce_s, i = 0, 0.0, 0
    high = int(queue * 0.9)
    started = time.perf_counter()
    own_cpu = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
    while time.perf_counter() - started < seconds:
        if events.queued() >= high:  # the harness's back-pressure: nothing must drop
            time.sleep(0.001)
            continue
        for _ in range(100):
            table, answer = batch[i % len(batch)], answers[i % len(batch)]
            t0 = time.perf_counter()
            events.predictions(f"{i:032x}", table, answer)
            produce_s += time.perf_counter() - t0
            produced += table.n_rows
            i += 1
    own_cpu = resource.getrusage(resource.RUSAGE_THREAD).ru_utime - own_cpu
    left = asyncio.run(events.close(120))
    elapsed = time.perf_counter() - started
    labels = {"model_name": "iris", "model_version": "1", "topic": topic}
    delivered = metrics.registry.get_sample_value("mlship_events_delivered_total", labels) or 0
    dropped = sum(
        metrics.registry.get_sample_value("mlship_events_dropped_total", {**labels, "reason": r}) or 0
        for r in ("queue_full", "rejected", "unencodable", "unflushed")
    )
    return {
        "produced": produced, "delivered": delivered - batch[0].n_rows, "dropped": dropped,
        "left": left, "seconds": elapsed,
        "rate": (delivered - batch[0].n_rows) / elapsed,
        "produce_us": produce_s / max(produced, 1) * 1e6,
        "thread_cpu_us": own_cpu / max(produced, 1) * 1e6,
        "broker_cpu_us": (cpu_of(broker.proc.pid) - broker_cpu) / max(produced, 1) * 1e6,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="producing time per round")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (events per call)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, after a warm-up")
    parser.add_argument("--queue", type=int, default=100_000, help="queue.buffering.max.messages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlship-bench-kafka-") as home:
        print("starting a Kafka broker (tests/kafkakit.py) ...", flush=True)
        with KafkaBroker.start(Path(home)) as broker:
            one_round(broker, min(args.seconds, 5.0), args.rows, args.queue)  # JVM warm-up
            results = []
            for n in range(args.rounds):
                r = one_round(broker, args.seconds, args.rows, args.queue)
                results.append(r)
                print(
                    f"round {n + 1}: {r['delivered']:.0f} events delivered in {r['seconds']:.1f} s = "
                    f"{r['rate']:,.0f} events/s; dropped {r['dropped']:.0f}, left {r['left']:.0f}; "
                    f"produce {r['produce_us']:.1f} us/event (thread CPU {r['thread_cpu_us']:.1f}); "
                    f"broker CPU {r['broker_cpu_us']:.1f} us/event",
                    flush=True,
                )
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    load = os.getloadavg()[0]
    print(
        f"\n{os.cpu_count()} CPUs ({cpu}), load average {load:.1f}; {args.rows} row(s) per call; "
        f"median of {args.rounds} rounds of {args.seconds:g} s: "
        f"{median(r['rate'] for r in results):,.0f} events/s delivered (target >= 20,000), "
        f"{median(r['produce_us'] for r in results):.1f} us per event on the producing thread, "
        f"{sum(r['dropped'] for r in results):.0f} dropped"
    )


if __name__ == "__main__":
    main()
