"""Every domain router mounted under /api/v1. Add a domain's router here."""

from fastapi import APIRouter

from aiaas.auth.router import router as auth_router

ROUTERS: list[APIRouter] = [
    auth_router,
]
