"""`python -m mlship_operator`: validate the environment, then run kopf with it."""

from __future__ import annotations

import os
import sys

import kopf

from .config import ConfigError, from_env


def main() -> int:
    try:
        config = from_env(os.environ)
    except ConfigError as err:
        print(f"mlship-operator: invalid configuration: {err}", file=sys.stderr)
        return 2
    kopf.configure(
        debug=config.log_level == "DEBUG", quiet=config.log_level in ("WARNING", "ERROR")
    )
    from . import main as _handlers  # noqa: F401 - registers the handlers

    kopf.run(
        standalone=True,
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        liveness_endpoint=config.liveness_endpoint or None,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
