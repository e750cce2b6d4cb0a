"""The `mlship` command. It imports the pipeline only once it knows the extras it needs are
installed, so a plain `pip install mlship` meets a sentence naming the extra, not a traceback."""

from __future__ import annotations

import importlib.util
import sys

# What the local process launcher imports, by extra; the steps run in this Python.
STEPS_EXTRA_MODULES = ("numpy", "pandas", "sklearn", "pyarrow", "skops", "scipy", "matplotlib", "orjson")


def missing_modules(names: tuple[str, ...]) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def extra_hint(extra: str, missing: list[str], needed_for: str) -> str:
    return (
        f"mlship: {needed_for} needs the '{extra}' extra ({', '.join(missing)} not installed): "
        f"pip install 'mlship[{extra}]'"
    )


def main(argv: list[str] | None = None) -> int:
    missing = missing_modules(STEPS_EXTRA_MODULES)
    if missing:
        print(extra_hint("steps", missing, "`mlship run`"), file=sys.stderr)
        return 1
    from mlship import cli

    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
