"""Mutation testing of mlship's pure modules with mutmut; prints the kill rate per module and the
survivors (`make mutate`; tests/README.md keeps the figures).

mutmut 3 only maps a file to its module under ./ or src/, and mlship's code lives in three roots
(src/mlship, operator/mlship_operator, dags/). So this stages a flat copy in build/mutate/
(src/mlship, src/mlship_operator, src/mlship_dagspec.py, and the tests, chart and manifests the
unit tests read), writes a pyproject.toml there with the [tool.mutmut] settings, and runs
`mutmut run` in it; mutmut's own copy with the mutants is build/mutate/mutants/.

    hack/mutate.py                       every module in MODULES
    hack/mutate.py src/mlship/ml/gate.py    only these (repo paths)
    hack/mutate.py --report              print the figures of the last run again
    hack/mutate.py --diff                ...with each survivor's diff

Only the unit tier runs against mutants (tests/unit minus test_dag.py, which imports the DAG files
in a child interpreter that never sees a mutant); mutmut runs, per mutant, only the tests that call
the mutated function.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutate"  # --stage changes it (e.g. to measure some modules beside a full run)

# The pure modules: logic without servers, clusters or processes, each with its unit tests.
MODULES = (
    "src/mlship/ml/gate.py",
    "src/mlship/monitoring/drift.py",
    "src/mlship/ml/validation.py",
    "src/mlship/ml/features.py",
    "src/mlship/ml/estimators.py",
    "src/mlship/ml/metrics.py",
    "src/mlship/ml/datasets.py",
    "src/mlship/monitoring/inference_log.py",
    "src/mlship/serving/config.py",
    "src/mlship/serving/batcher.py",
    "src/mlship/serving/recorder.py",
    "src/mlship/serving/protocol.py",
    "src/mlship/events/schema.py",
    "src/mlship/events/alive.py",
    "operator/mlship_operator/config.py",
    "operator/mlship_operator/spec.py",
    "operator/mlship_operator/builders.py",
    "operator/mlship_operator/rollout.py",
    "operator/mlship_operator/polling.py",
    "operator/mlship_operator/decide.py",
    "operator/mlship_operator/target.py",
    "operator/mlship_operator/report.py",
    "operator/mlship_operator/events.py",
    "operator/mlship_operator/conflict.py",
    "operator/mlship_operator/conditions.py",
    "src/mlship/contract.py",
    "dags/mlship_dagspec.py",
)

# Tests of seconds each that every mutant of their module would run, and that kill nothing the
# module's deterministic tests do not (a 200-trial false-alarm rate, a rendered plot, the skops
# allow-list being minimal): left out of the mutation runs, not out of the suite.
SLOW = (
    "test_drift.py::test_no_false_alarm_on_unshifted_data_at_the_defaults",
    "test_drift.py::test_the_plot_has_a_panel_per_feature_drifted_ones_in_red",
    "test_estimators.py::test_trusted_types_are_minimal",
)

# mutmut's exit codes (mutmut.stats.status_by_exit_code): a timeout is a kill (the mutant hung a test)
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout"}
SURVIVED = {0: "survived"}
NO_TESTS = {5: "no tests", 33: "no tests"}


def staged(path: str) -> str:
    """The repo path's place in the staged flat src/ tree."""
    if path.startswith("src/"):
        return path
    if path.startswith("operator/"):
        return "src/" + path.removeprefix("operator/")
    if path.startswith("dags/"):
        return "src/" + path.removeprefix("dags/")
    raise SystemExit(f"hack/mutate.py: {path} is not under src/, operator/ or dags/")


def stage(modules: list[str]) -> None:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "src").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src" / "mlship", STAGE / "src" / "mlship", ignore=ignore)
    shutil.copytree(ROOT / "operator" / "mlship_operator", STAGE / "src" / "mlship_operator", ignore=ignore)
    shutil.copy2(ROOT / "dags" / "mlship_dagspec.py", STAGE / "src" / "mlship_dagspec.py")
    for name in ("tests", "charts", "manifests", "hack"):  # hack/devkit.py: tests/conftest.py imports it
        (STAGE / name).symlink_to(ROOT / name, target_is_directory=True)
    settings = {
        "source_paths": ["src"],
        "only_mutate": [staged(m) for m in modules],
        "also_copy": ["charts", "manifests", "hack"],
        "pytest_add_cli_args_test_selection": ["tests/unit"],
        "pytest_add_cli_args": [
            "-p", "no:cacheprovider", "-q",
            "--ignore=tests/unit/test_dag.py",
            *(f"--deselect=tests/unit/{test}" for test in SLOW),
        ],
    }
    toml = "\n[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (STAGE / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + toml)


def results(modules: list[str]) -> dict[str, dict[str, int]]:
    """mutant name -> exit code, per repo path, from mutmut's .meta files."""
    out = {}
    for module in modules:
        meta = STAGE / "mutants" / (staged(module) + ".meta")
        if not meta.exists():
            raise SystemExit(f"hack/mutate.py: no results for {module} ({meta}): run it first")
        out[module] = json.loads(meta.read_text())["exit_code_by_key"]
    return out


def report(modules: list[str], diff: bool) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    by_module = results(modules)
    rows, survivors, total = [], [], Counter()
    for module, codes in by_module.items():
        c = Counter()
        for name, code in codes.items():
            kind = "killed" if code in KILLED else "survived" if code in SURVIVED else (
                "no tests" if code in NO_TESTS else "other")
            c[kind] += 1
            if kind != "killed":
                survivors.append((module, name, KILLED.get(code) or SURVIVED.get(code)
                                  or NO_TESTS.get(code) or f"exit {code}"))
        total += c
        rows.append((module, c))
    print(f"\n{'module':<40} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'rate':>7}")
    for module, c in [*rows, ("all", total)]:
        n = sum(c.values())
        rate = f"{100 * c['killed'] / n:.1f} %" if n else "-"
        print(f"{module:<40} {n:>7} {c['killed']:>7} {c['survived']:>8} {c['no tests']:>8} {rate:>7}")
    if survivors:
        print(f"\nsurvivors ({len(survivors)}; `cd {os.path.relpath(STAGE, ROOT)} && {mutmut} show NAME`):")
        for module, name, kind in survivors:
            print(f"  {module}  {name}  [{kind}]")
            if diff:
                proc = subprocess.run([str(mutmut), "show", name], cwd=STAGE, capture_output=True,
                                      text=True, check=False)
                print("    " + "\n    ".join(proc.stdout.rstrip().splitlines()[1:]))
    return 0


def main() -> int:
    global STAGE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="repo paths (default: MODULES)")
    parser.add_argument("--report", action="store_true", help="only print the last run's figures")
    parser.add_argument("--diff", action="store_true", help="print each survivor's diff")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--stage", type=Path, help=f"where to stage and run (default {STAGE})")
    args = parser.parse_args()
    if args.stage:
        STAGE = args.stage.resolve()
    modules = args.modules or list(MODULES)
    if not args.report:
        stage(modules)
        mutmut = Path(sys.executable).with_name("mutmut")
        log = STAGE / "mutmut.log"  # its progress spinner, not worth a terminal
        print(f"hack/mutate.py: mutmut run over {len(modules)} modules "
              f"(progress: {os.path.relpath(log, ROOT)})")
        with log.open("w") as out:
            proc = subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children)],
                                  cwd=STAGE, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            print(log.read_text()[-3000:], file=sys.stderr)
            print(f"hack/mutate.py: mutmut run exited {proc.returncode}", file=sys.stderr)
            return proc.returncode
    return report(modules, args.diff)


if __name__ == "__main__":
    sys.exit(main())
