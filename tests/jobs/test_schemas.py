"""The training-job schemas name exactly the engine's families and metrics."""

from aiaas.automl.families import FAMILIES
from aiaas.automl.metrics import METRICS
from aiaas.jobs import schemas


def test_family_and_metric_names_are_the_engines():
    assert schemas.FAMILIES == tuple(sorted(FAMILIES))
    assert schemas.METRICS == tuple(sorted(METRICS))
