"""The `mlship` command. It imports the pipeline only once it knows the extras it needs are
installed, so a plain `pip install mlship` meets a sentence naming the extra, not a traceback."""

from __future__ import annotations

import importlib.util
import sys

# What `mlship run` imports: the 'steps' extra (its steps run in this Python).
STEPS_EXTRA_MODULES = ("numpy", "pandas", "sklearn", "pyarrow", "skops", "scipy", "matplotlib", "orjson")


def main(argv: list[str] | None = None) -> int:
    missing = [m for m in STEPS_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"mlship: `mlship run` needs the 'steps' extra ({', '.join(missing)} not installed): "
              "pip install 'mlship[steps]'", file=sys.stderr)
        return 1
    from mlship import cli

    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
