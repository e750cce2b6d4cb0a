"""Process entry point: configuration, logging, uvicorn, signals and the exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from mlship.serving.app import EXIT_CONFIG, create_app
from mlship.serving.config import ConfigError, load_config

log = logging.getLogger("mlship.serving")

# Kubernetes shows this file's content as the container's termination message
# (`lastState.terminated.message`), so the operator can say why a version failed.
TERMINATION_LOG = Path("/dev/termination-log")


def _write_termination_message(message: str) -> None:
    if TERMINATION_LOG.exists():
        try:
            TERMINATION_LOG.write_text(message[:4000])
        except OSError:
            log.warning("could not write %s", TERMINATION_LOG)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def main() -> int:
    try:
        config = load_config(os.environ)
    except ConfigError as e:
        print(f"mlship serving: {e}", file=sys.stderr)
        _write_termination_message(str(e))
        return EXIT_CONFIG
    _configure_logging(config.log_level)

    exit_code = 0
    server: uvicorn.Server | None = None

    def on_fatal(code: int, message: str) -> None:
        nonlocal exit_code
        log.error("%s; exiting with code %d", message, code)
        _write_termination_message(message)
        exit_code = code
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_config=None,
            access_log=config.log_level == "DEBUG",
            server_header=False,
            timeout_graceful_shutdown=config.shutdown_timeout_s,  # type: ignore[arg-type]
        )
    )
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal with the previous
    # handler; a no-op one turns a clean drain into exit code 0 instead of death by SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    if exit_code == 0 and not server.started:
        return 1
    return exit_code
