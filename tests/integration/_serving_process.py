"""`python -m mlship.serving` as a subprocess, spoken to over HTTP (shared by the serving tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests
from devkit import WaitTimeout, free_port, stop_process, wait_for


class Server:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {
            **os.environ,
            "PORT": str(self.port),
            "MLSHIP_HOST": "127.0.0.1",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlship.serving"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def post(
        self,
        body: object = None,
        data: bytes | str | None = None,
        content_type: str = "application/json",
    ) -> requests.Response:
        if body is not None:
            return requests.post(self.url + "/invocations", json=body, timeout=30)
        return requests.post(
            self.url + "/invocations", data=data, timeout=30, headers={"Content-Type": content_type}
        )

    def wait_exit(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def wait_ready(self, timeout: float = 120) -> list[tuple[int, int]]:
        """Poll /livez and /health until ready; return the (livez, health) codes seen."""
        seen: list[tuple[int, int]] = []

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            codes = (self.get("/livez").status_code, self.get("/health").status_code)
            seen.append(codes)
            return codes[1] == 200

        try:
            wait_for(f"{self.url}/health to answer 200", ready, timeout, 0.05,
                     retry=(requests.ConnectionError,))
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; last (livez, health): {seen[-1:]}\n{self.log()}") from None
        return seen

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
