"""One runner for untrusted work: every process that handles untrusted input starts here.

Parent: :func:`run_child` (``runner``) with :class:`ChildLimits` and :class:`ChildPaths`;
child: :func:`aiaas.sandbox.child.start` first thing in its ``main``. Users today: ingest
(``aiaas.data.ingest_worker``) and SQL (``aiaas.data.sql_worker``); next, training jobs and
model loading. See docs/architecture.md, "Untrusted work".
"""

from aiaas.sandbox.runner import (
    ChildLimits,
    ChildPaths,
    ChildRun,
    claim_output,
    last_json_line,
    run_child,
)

__all__ = ["ChildLimits", "ChildPaths", "ChildRun", "claim_output", "last_json_line", "run_child"]
