"""Pagination for routes: ``PageParams`` (limit, cursor) and ``paginate`` → ``Page[T]``."""

from aiaas.api.deps import PageDep, page_params
from aiaas.db.pagination import Page, PageParams, paginate

__all__ = ["Page", "PageDep", "PageParams", "page_params", "paginate"]
