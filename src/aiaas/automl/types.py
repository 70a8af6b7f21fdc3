"""The task vocabulary shared by the library's modules.

``Task`` is what a fitted model is; ``TaskOption`` is what a caller may ask ``fit`` for
(``auto`` is resolved to a ``Task`` from the target before anything else uses it).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["TASK_OPTIONS", "Task", "TaskOption"]

Task = Literal["binary", "multiclass", "regression"]
TaskOption = Literal["auto", "binary", "multiclass", "regression"]

TASK_OPTIONS: tuple[TaskOption, ...] = ("auto", "binary", "multiclass", "regression")
