"""Monitoring fixtures: the serving fixtures (tiny models of every task, ``deploy``)."""

from tests.registry.conftest import register, store  # noqa: F401
from tests.serving.conftest import (  # noqa: F401
    deploy,
    multiclass_model,
    quiet_logs,
    regression_model,
    saved_model,
)
