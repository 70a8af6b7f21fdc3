"""Imports every domain's ORM models so that ``Base.metadata`` is complete (Alembic, checks)."""

import aiaas.auth.models
import aiaas.data.models
import aiaas.jobs.models
import aiaas.monitoring.models
import aiaas.registry.models
import aiaas.serving.models  # noqa: F401
