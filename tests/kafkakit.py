"""A real Kafka broker for the integration tests: Apache Kafka's own jars (hack/kafka-jars, from
Maven Central) run by the host's Java as a single combined KRaft node on free loopback ports, in a
temporary directory. The same broker the chart runs, without a container.

    with KafkaBroker.start(tmp_path) as broker:
        broker.bootstrap            # "127.0.0.1:PORT"
        broker.stop(); broker.restart()   # same data, same port
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from types import TracebackType

from devkit import WaitTimeout, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


def kafka_libs() -> Path | None:
    """The jars' directory, or None when this machine cannot have it (no Java or Maven)."""
    if shutil.which("java") is None:
        return None
    done = subprocess.run(
        [str(ROOT / "hack" / "kafka-jars")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    return Path(done.stdout.strip())


class KafkaBroker:
    def __init__(self, home: Path, libs: Path, nice: int = 0) -> None:
        self.home, self.libs, self.nice = home, libs, nice
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @classmethod
    def start(
        cls, home: Path, libs: Path | None = None, timeout: float = 90, nice: int = 0
    ) -> KafkaBroker:
        """nice: the broker's scheduling niceness (a benchmark's stand-in for a broker on cores
        of its own)."""
        libs = libs or kafka_libs()
        if libs is None:
            raise RuntimeError("no Java or Kafka jars here: run hack/setup test")
        broker = cls(home, libs, nice)
        broker._format()
        broker.restart(timeout)
        return broker

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={ROOT / 'hack/images/kafka/log4j2.yaml'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]  # fmt: skip

    def _write_config(self) -> None:
        self.config = self.home / "server.properties"
        self.config.write_text(
            "\n".join(
                [
                    "node.id=1",
                    "process.roles=broker,controller",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"log.dirs={self.home / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=3",
                ]
            )
            + "\n"
        )

    def _format(self) -> None:
        cluster_id = uuid.uuid4().bytes.hex()[:22]
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                       "-c", str(self.config)),
            check=True, capture_output=True, env={**os.environ, "KAFKA_LOG4J_ROOT_LOGLEVEL": "WARN"},
        )  # fmt: skip

    def restart(self, timeout: float = 90) -> None:
        """Starts the broker (again, on the same data and port) and waits until it answers as
        Kafka: the API-versions handshake of a real client, not just an open port."""
        log = (self.home / "broker.log").open("ab")
        self.proc = proc = subprocess.Popen(
            ["nice", "-n", str(self.nice), *self._java("kafka.Kafka", str(self.config))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "KAFKA_LOG4J_ROOT_LOGLEVEL": "WARN"},
        )  # fmt: skip
        from confluent_kafka.admin import AdminClient

        # log_level 0: its "connection refused" until the broker listens is expected, not news.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the broker exited ({proc.returncode}): see {log.name}")
            try:
                return bool(admin.list_topics(timeout=2).brokers)
            except Exception:  # KafkaException until the broker answers
                return False

        try:
            wait_for(f"the broker on {self.bootstrap} to answer", answers, timeout, 0.5, retry=())
        except WaitTimeout as exc:
            self.stop()
            raise RuntimeError(f"{exc}: see {log.name}") from None

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
