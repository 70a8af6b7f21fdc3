"""Every domain router mounted under /api/v1. Add a domain's router here."""

from fastapi import APIRouter

from aiaas.auth.router import router as auth_router
from aiaas.data.router import router as data_router
from aiaas.jobs.router import router as jobs_router
from aiaas.monitoring.router import router as monitoring_router
from aiaas.registry.router import router as registry_router
from aiaas.serving.batch_router import router as batch_router
from aiaas.serving.router import router as serving_router

ROUTERS: list[APIRouter] = [
    auth_router,
    data_router,
    jobs_router,
    registry_router,
    serving_router,
    batch_router,
    monitoring_router,
]
