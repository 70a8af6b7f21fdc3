"""Reading the prediction log back (:mod:`aiaas.serving.predlog` writes it).

The log of an endpoint is Parquet under its organization's
``predictions/<endpoint id>/<YYYY-MM-DD>/`` (the day the writer wrote it, UTC). A window
reads the folders of the days it touches, plus the next day's (rows of the last seconds of
a day are written just after midnight), and keeps the rows whose ``ts`` is inside it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiaas.storage import ArtifactStore

#: Read at most this many log files for one answer (the writer makes one per flush, endpoint,
#: version and role: a day of steady traffic at the default 2 s flush is 43,200 files).
MAX_FILES = 20_000


class TooMuchLog(Exception):
    """The window holds more log files than one answer reads."""


def days(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) + timedelta(days=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def read(
    store: ArtifactStore, org_id: str, endpoint_id: str, start: datetime, end: datetime
) -> Any:
    """The logged rows of ``[start, end)`` as one Arrow table (None when there are none)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keys = [
        key
        for day in days(start, end)
        for key in store.list(org_id, f"predictions/{endpoint_id}/{day:%Y-%m-%d}")
        if key.endswith(".parquet")
    ]
    if len(keys) > MAX_FILES:
        raise TooMuchLog(f"{len(keys)} log files")
    tables = []
    for key in keys:
        with store.open(org_id, key) as handle:
            tables.append(pq.read_table(handle))
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    ts = table.column("ts")
    lo = pa.scalar(start.astimezone(UTC), pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(end.astimezone(UTC), pa.timestamp("us", tz="UTC"))
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
