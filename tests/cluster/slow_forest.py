"""A model whose every call takes DELAY_S longer than the forest it wraps: the
"slower version" a shadow rollout must stop (an MLflow model from code, logged by
operator_harness.register_slow_forest; the serving pod runs this file to load it).

The forest is the one register_forests logs first (5 trees, random_state 0, all of iris), fit
again at load, so this version answers exactly as that one does and differs only in time.
"""

import time

import mlflow
from mlflow.pyfunc import PythonModel
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

DELAY_S = 0.5


class SlowForest(PythonModel):
    def load_context(self, context):  # noqa: ANN001, ANN201 - MLflow's signature
        x, y = load_iris(return_X_y=True, as_frame=True)
        self.forest = RandomForestClassifier(5, random_state=0).fit(x, y)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201, ARG002
        time.sleep(DELAY_S)
        return self.forest.predict(model_input)


mlflow.models.set_model(SlowForest())
