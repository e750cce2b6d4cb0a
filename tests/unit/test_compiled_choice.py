"""Which predictor serving and batch scoring use (mlship.mlflow_io.compiled.choose): the compiled
form only when the version's parity held and it loads and fits the signature; otherwise
scikit-learn, with the reason as a metric label and in words."""

from __future__ import annotations

import pandas as pd
import pytest

from mlship import names
from mlship.ml import compiled, estimators
from mlship.mlflow_io.compiled import Choice, choose

pytestmark = pytest.mark.unit

COLUMNS = ("x", "kind")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> str:
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "kind": ["a", "b", "a", "b"]})
    model = estimators.model_pipeline(
        ["x"], ["kind"], estimators.build_estimator("regression", "ridge", {}, seed=0)
    ).fit(X, [0.0, 1.0, 2.0, 3.0])
    path = tmp_path_factory.mktemp("version") / "compiled"
    compiled.compile_pipeline(model, "regression").save(path)
    return str(path)


def held(uri: str) -> dict[str, str]:
    return {names.TAG_COMPILED: names.PARITY_HELD, names.TAG_COMPILED_URI: uri,
            names.TAG_COMPILED_DETAIL: "held: 0 of 8 rows differ"}


def test_parity_held_and_it_loads_the_compiled_form_scores(stored):
    choice = choose(held(stored), COLUMNS, None)
    fast = choice.predictor
    assert isinstance(fast, compiled.CompiledPredictor) and choice.kind == "compiled"
    assert (choice.code, choice.reason) == ("parity_held", "parity held: 0 of 8 rows differ")
    assert fast.predict({"x": [1.5], "kind": ["b"]}).shape == (1,)


@pytest.mark.parametrize(
    ("tags", "columns", "code", "reason"),
    [
        (None, COLUMNS, "no_record", "no registry record of a compiled form (not a registered version)"),
        ({}, COLUMNS, "no_record", "the version has no mlship.compiled tag (registered before compiling)"),
        ({names.TAG_COMPILED: names.NOT_COMPILED,
          names.TAG_COMPILED_DETAIL: "not compiled: estimator SVC is not supported"},
         COLUMNS, "not_compiled", "not compiled: estimator SVC is not supported"),
        ({names.TAG_COMPILED: names.PARITY_FAILED,
          names.TAG_COMPILED_DETAIL: "failed: 3 of 8 rows differ"},
         COLUMNS, "parity_failed", "parity failed: 3 of 8 rows differ"),
        ("held", None, "load_failed", "the model has no column signature to give the compiled form"),
        ("held", ("x",), "load_failed",
         "the compiled form needs columns the signature lacks: kind"),
    ],
    ids=["not-registered", "untagged", "not-compiled", "parity-failed", "no-signature", "columns"],
)
def test_otherwise_scikit_learn_scores_and_the_reason_is_given(stored, tags, columns, code, reason):
    tags = held(stored) if tags == "held" else tags
    choice = choose(tags, columns, None)
    assert choice == Choice(None, code, reason) and choice.kind == "sklearn"


def test_a_compiled_form_that_cannot_be_loaded_falls_back(tmp_path):
    choice = choose(held(str(tmp_path / "nothing")), COLUMNS, None)
    assert (choice.predictor, choice.code) == (None, "load_failed")
    assert choice.reason.startswith("the compiled form could not be loaded: ")
