"""A registered version's compiled predictor (mlship.ml.compiled), when its parity record allows.

The register step compiles a version and checks the compiled form's answers against
scikit-learn's on the holdout, recording the verdict in the version's tags. Serving and batch
scoring both use the compiled form only when that verdict is "held" and the form loads; else they
score with scikit-learn and say why, in words and as a short code (a metric label).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlship import names
from mlship.errors import describe

log = logging.getLogger(__name__)

COMPILED = "compiled"
SKLEARN = "sklearn"


@dataclass(frozen=True)
class Choice:
    """What scores a version's rows: `predictor` (a CompiledPredictor) or, when None, scikit-learn;
    `code` is parity_held, no_record, not_compiled, parity_failed or load_failed."""

    predictor: Any
    code: str
    reason: str

    @property
    def kind(self) -> str:
        return SKLEARN if self.predictor is None else COMPILED


def verdict(tags: Mapping[str, str] | None) -> tuple[str | None, str, str]:
    """(the compiled form's URI to load, or None; code; reason) from a version's tags."""
    if tags is None:
        return None, "no_record", "no registry record of a compiled form (not a registered version)"
    held = tags.get(names.TAG_COMPILED)
    detail = tags.get(names.TAG_COMPILED_DETAIL, "")
    if held is None:
        return None, "no_record", f"the version has no {names.TAG_COMPILED} tag (registered before compiling)"
    if held == names.NOT_COMPILED:
        return None, "not_compiled", detail or names.NOT_COMPILED
    if held != names.PARITY_HELD:
        return None, "parity_failed", f"parity {detail or held}"
    return tags.get(names.TAG_COMPILED_URI, ""), "parity_held", f"parity {detail}"


def choose(tags: Mapping[str, str] | None, columns: Iterable[str] | None, tracking_uri: str | None) -> Choice:
    """The version's compiled predictor when its parity held, it loads and `columns` (the model's
    input columns, None when it has no signature) hold every column it reads."""
    uri, code, reason = verdict(tags)
    if uri is None:
        return Choice(None, code, reason)
    if columns is None:
        return Choice(None, "load_failed", "the model has no column signature to give the compiled form")
    try:
        import mlflow.artifacts

        from mlship.ml.compiled import CompiledPredictor

        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="mlship-compiled-"), tracking_uri=tracking_uri,
        )
        fast = CompiledPredictor.load(local)
    except Exception as e:  # noqa: BLE001 - any failure: scikit-learn scores, the reason is said
        log.warning("the compiled form %s could not be loaded; scikit-learn scores", uri, exc_info=True)
        return Choice(None, "load_failed", f"the compiled form could not be loaded: {describe(e, 500)}")
    missing = sorted(set(fast.columns) - set(columns))
    if missing:
        lacking = ", ".join(missing)
        return Choice(None, "load_failed", f"the compiled form needs columns the signature lacks: {lacking}")
    return Choice(fast, code, reason)
