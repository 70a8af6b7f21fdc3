"""Settings, read once from ``AIAAS_*`` environment variables (and a ``.env`` file).

Flat names for the common settings (``AIAAS_DATA_DIR``, ``AIAAS_DATABASE_URL``,
``AIAAS_ARTIFACTS_URL``); groups use ``__`` (``AIAAS_LIMITS__MAX_BODY_BYTES``,
``AIAAS_AUTH__ACCESS_TOKEN_TTL_S``). Build them with :func:`get_settings` and inject
them; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Limits(BaseModel):
    """Request limits enforced before any route code runs."""

    max_body_bytes: int = Field(
        10 * MiB, ge=1024, description="Largest JSON/form body accepted (413 above it)."
    )
    max_upload_bytes: int = Field(
        5 * 1024 * MiB,
        ge=1024,
        description="Largest multipart/octet-stream upload accepted (413 above it).",
    )
    max_public_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest body of a route reachable without credentials (the login form).",
    )
    max_string_length: int = Field(
        1000, ge=16, description="Longest name/description string accepted in JSON bodies."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        description="Largest request line plus headers `aiaas serve` reads (431 above it).",
    )
    header_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Time a client has to send the request line and headers (then 408 and "
        "the connection is closed).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause between two pieces of a request body (then 408).",
    )


class AuthSettings(BaseModel):
    """Credentials: JWT sessions, API keys, password hashing, login throttling."""

    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs JWTs and pagination cursors. Unset: generated once and "
        "kept in DATA_DIR/.secret_key (mode 0600).",
    )
    access_token_ttl_s: int = Field(900, ge=30, description="Lifetime of a JWT access token.")
    refresh_token_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="Lifetime of a refresh token (rotated on use)."
    )
    api_key_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long a looked-up API key is cached in process; revocation takes "
        "effect on other replicas within this bound.",
    )
    argon2_time_cost: int = Field(3, ge=1, description="argon2id iterations.")
    argon2_memory_kib: int = Field(65536, ge=8, description="argon2id memory in KiB.")
    argon2_parallelism: int = Field(1, ge=1, description="argon2id lanes.")
    login_max_failures: int = Field(
        10, ge=1, description="Failed logins per account (and per client address) before 429."
    )
    login_window_s: int = Field(900, ge=1, description="Window of the login failure count.")
    min_password_length: int = Field(12, ge=8, description="Shortest password accepted.")


class DataSettings(BaseModel):
    """Dataset ingest, profiling and SQL limits (owned by the data domain)."""

    max_columns: int = Field(2000, ge=1, description="Most columns a dataset may have (422 above).")
    max_line_bytes: int = Field(
        8 * MiB, ge=1024, description="Longest CSV line / JSON record accepted while parsing."
    )
    max_cell_bytes: int = Field(
        1 * MiB, ge=16, description="Largest single text value accepted in a dataset."
    )
    max_rows: int = Field(200_000_000, ge=1, description="Most rows one version may have.")
    max_decompressed_bytes: int = Field(
        20 * 1024 * MiB, ge=MiB, description="Cap on the decompressed size of a gzip upload."
    )
    max_compression_ratio: float = Field(
        200.0, ge=2, description="Cap on decompressed/compressed size (gzip bombs → 413)."
    )
    max_append_records: int = Field(
        100_000, ge=1, description="Most JSON records one append request may carry."
    )
    duckdb_memory_limit: str = Field(
        "512MB",
        description="DuckDB memory limit for ingest, profiling and recipes (it spills to "
        "the scratch directory beyond it).",
    )
    duckdb_threads: int = Field(2, ge=1, description="DuckDB threads for ingest and profiling.")
    max_concurrent_ingests: int = Field(
        2,
        ge=1,
        description="Uploads, appends, imports and transforms converted at once per process "
        "(each holds up to duckdb_memory_limit); others wait.",
    )
    max_concurrent_ingests_per_org: int | None = Field(
        None,
        ge=1,
        description="Of those slots, how many one organization may hold at once (unset: "
        "max_concurrent_ingests - 1, at least 1; at most max_concurrent_ingests). Waiting "
        "requests are admitted round-robin across organizations, so one tenant's large "
        "uploads never queue another tenant's small one.",
    )
    ingest_queue_timeout_s: float = Field(
        300.0, gt=0, description="How long a request waits for a free ingest slot (then 429)."
    )
    max_storage_bytes_per_org: int = Field(
        100 * 1024 * MiB,
        ge=0,
        description="Bytes of stored versions (their Parquet files) one organization may keep; "
        "a new version beyond it is refused (429 quota_exceeded, nothing stored). "
        "0: unlimited.",
    )
    sweep_interval_s: float = Field(
        300.0,
        ge=0,
        description="How often `aiaas serve` removes crash leftovers (scratch directories of "
        "dead processes at once; stored files without a version row after orphan_min_age_s). "
        "0: only at startup.",
    )
    orphan_min_age_s: float = Field(
        3600.0,
        ge=0,
        description="Age after which stored files without a version row, the store's temporary "
        "files and unlocked scratch leftovers are removed (another replica may be writing "
        "younger ones).",
    )
    ingest_preserve_order: bool = Field(
        True,
        description="Keep the uploaded row order in the stored Parquet. False lets DuckDB "
        "write row groups in parallel order (~20% faster conversion, less memory).",
    )
    ingest_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="Wall-clock limit of one ingest process (conversion of one upload); its "
        "CPU-seconds limit is this times duckdb_threads.",
    )
    ingest_address_space_bytes: int = Field(
        4 * 1024 * MiB,
        ge=0,
        description="RLIMIT_AS of an ingest process (0: unlimited). Uploads are parsed in a "
        "separate, limited process, never in the API process.",
    )
    ingest_sandbox: bool = Field(
        True,
        description="Confine each ingest process with Landlock (Linux >= 5.13) to its scratch "
        "directory and the Python installation; where the kernel lacks it, rlimits only.",
    )
    profile_exact_rows: int = Field(
        1_000_000,
        ge=0,
        description="Up to this many rows distinct counts and quantiles are exact; above, "
        "HyperLogLog and a row sample are used (the profile says which).",
    )
    sql_timeout_s: float = Field(10.0, gt=0, le=3600, description="Wall-clock limit per query.")
    sql_max_rows: int = Field(10_000, ge=1, description="Rows returned by one query at most.")
    sql_max_bytes: int = Field(
        64 * MiB,
        ge=1024,
        description="Bytes of serialized result (row JSON, one line per row) one query returns "
        "at most; the API process reads no more than this + 1 MiB from the query process.",
    )
    sql_memory_limit: str = Field("512MB", description="DuckDB memory limit of a query process.")
    sql_threads: int = Field(1, ge=1, description="DuckDB threads of a query process.")
    sql_max_concurrent_per_org: int = Field(
        2, ge=1, description="Queries one organization may run at once per process (429 above)."
    )
    sql_address_space_bytes: int = Field(
        4 * 1024 * MiB,
        ge=0,
        description="RLIMIT_AS of a query process (0: unlimited).",
    )
    import_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names, IPs or CIDR networks) SQL import may connect to. "
        "Empty: SQL import is disabled.",
    )
    import_max_rows: int = Field(10_000_000, ge=1, description="Most rows one SQL import reads.")
    import_statement_timeout_s: int = Field(
        300, ge=1, description="Statement timeout of an SQL import on the remote database."
    )

    @model_validator(mode="after")
    def _per_org_slots(self) -> DataSettings:
        per_org = self.max_concurrent_ingests_per_org
        if per_org is not None and per_org > self.max_concurrent_ingests:
            raise ValueError(
                f"max_concurrent_ingests_per_org ({per_org}) must not exceed "
                f"max_concurrent_ingests ({self.max_concurrent_ingests})"
            )
        return self

    @property
    def ingest_slots_per_org(self) -> int:
        """The per-organization share of the ingest slots (see max_concurrent_ingests_per_org)."""
        total = self.max_concurrent_ingests
        return min(total, self.max_concurrent_ingests_per_org or max(1, total - 1))


class JobsSettings(BaseModel):
    """The job queue, its workers, and the training jobs they run (``AIAAS_JOBS__*``)."""

    workers: int = Field(
        1, ge=0, le=64, description="Job workers `aiaas serve` runs in its own process (0: none)."
    )
    lease_s: float = Field(
        15.0,
        gt=1,
        le=3600,
        description="How long a claim lasts without a heartbeat; a job whose lease expired "
        "is retried (its worker is taken for lost).",
    )
    heartbeat_s: float = Field(
        2.0, gt=0, le=600, description="How often a worker renews the lease of its job."
    )
    poll_s: float = Field(
        0.5, gt=0, le=60, description="How often an idle worker looks for queued jobs."
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Runs of a job whose worker was lost, before it fails."
    )
    retry_backoff_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Wait before a lost job runs again: this, doubled on every attempt.",
    )
    max_concurrent_per_org: int = Field(
        2, ge=1, description="Jobs of one organization that run at the same time (others wait)."
    )
    max_queued_per_org: int = Field(
        20, ge=1, description="Jobs one organization may have waiting (429 above)."
    )
    max_time_budget_s: float = Field(
        3600.0, ge=5, description="Largest time_budget_s one training job may ask for (403 above)."
    )
    min_time_budget_s: float = Field(
        10.0,
        ge=1,
        description="Smallest time_budget_s a training job may ask for (422 below): the "
        "training process needs 1-3 s to start and read its data, within the budget.",
    )
    registration_reserve_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Part of a job's time budget kept for storing and registering the model.",
    )
    training_address_space_bytes: int = Field(
        16 * 1024 * MiB,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of a training process; 0 = unlimited.",
    )
    training_max_file_bytes: int = Field(
        2 * 1024 * MiB, ge=1, description="Largest file a training process may write."
    )
    training_threads: int | None = Field(
        None,
        ge=1,
        description="Threads of one training process. Unset: the machine's cores divided "
        "by the embedded workers.",
    )
    training_grace_s: float = Field(
        60.0,
        ge=1,
        description="Beyond its time budget, how long a training process may run before it "
        "is killed (the budget itself is kept by the engine).",
    )
    warm_training_process: bool = Field(
        True,
        description="Each worker keeps one training process started ahead of its next job "
        "(its imports done, about 200 MB idle), so a job starts training about 1.5 s sooner.",
    )
    training_sandbox: bool = Field(
        True,
        description="Landlock for training processes (read only the dataset version, write "
        "only the output directory, no TCP). Switch off only on a kernel that refuses it.",
    )
    batch_chunk_rows: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Rows a batch prediction reads, predicts and writes at a time (its "
        "progress and cancel points).",
    )
    batch_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="Wall-clock limit of one batch prediction's scoring process.",
    )
    batch_address_space_bytes: int = Field(
        8 * 1024 * MiB,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of a batch scoring process; 0 = unlimited.",
    )
    batch_max_file_bytes: int = Field(
        64 * 1024 * MiB,
        ge=1,
        description="Largest file (the scored Parquet) a batch scoring process may write.",
    )


class RegistrySettings(BaseModel):
    """Models brought by their users: ONNX uploads and quantization (``AIAAS_REGISTRY__*``)."""

    max_onnx_bytes: int = Field(
        512 * MiB, ge=1, description="Largest ONNX file one upload may carry (413 above)."
    )
    onnx_check_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Wall-clock limit of the sandboxed check of an upload."
    )
    onnx_check_address_space_bytes: int = Field(
        4 * 1024 * MiB,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of the process that checks an upload.",
    )
    quantize_timeout_s: float = Field(
        300.0,
        gt=0,
        le=6 * 3600,
        description="Wall-clock limit of the sandboxed process that quantizes a version and "
        "measures both graphs on the reference rows.",
    )
    quantize_address_space_bytes: int = Field(
        4 * 1024 * MiB,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of the quantizing process; 0 = unlimited.",
    )
    quantize_reference_rows: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Rows of the reference dataset a quantization is measured on (the "
        "first ones, in the dataset's order).",
    )


class ServingSettings(BaseModel):
    """Endpoints and online prediction (``AIAAS_SERVING__*``)."""

    refresh_s: float = Field(
        0.25,
        gt=0,
        le=60,
        description="How often each worker re-reads the endpoints' revisions: a change "
        "reaches every worker of every replica within this (plus the model's load).",
    )
    fast_path: bool = Field(
        True,
        description="Answer predictions in the serving gateway (pure ASGI, before FastAPI's "
        "routing); off: the same code runs behind FastAPI's routes.",
    )
    onnx_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="ONNX Runtime intra-op threads per model session (per worker process).",
    )
    model_cache_bytes: int = Field(
        2 * 1024 * MiB,
        ge=1,
        description="Memory the loaded models of one worker may take (estimated); the "
        "least recently used are unloaded above it.",
    )
    max_rows: int = Field(10_000, ge=1, description="Rows one prediction request may carry.")
    max_endpoints_per_org: int = Field(
        200, ge=1, description="Endpoints one organization may have (403 above)."
    )
    batching: bool = Field(
        True,
        description="Adaptive micro-batching: concurrent requests to one model version are "
        "predicted in one call. With batch_wait_ms 0 (the default) a request waits for no "
        "one: it joins the requests read in the same turn of the event loop, so batches grow "
        "with the load and a lone request is answered at once.",
    )
    batch_max_rows: int = Field(
        256, ge=1, description="Most rows of one micro-batch (with batching on)."
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Longest a request waits for others to join its micro-batch (0: only "
        "those already read in the same turn of the event loop).",
    )
    prediction_log: bool = Field(
        True, description="Log every prediction (inputs, outputs, version) for monitoring."
    )
    log_flush_s: float = Field(
        2.0, gt=0, le=3600, description="How often the prediction log is written out."
    )
    log_queue_rows: int = Field(
        200_000,
        ge=1,
        description="Prediction-log rows held in memory at most; beyond, rows are dropped "
        "and counted (a prediction never waits for its log).",
    )


class Settings(BaseSettings):
    """All aiaas settings. Every field can be set as ``AIAAS_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="AIAAS_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Literal["dev", "test", "prod"] = Field("dev", description="Deployment environment.")
    data_dir: Path = Field(Path("./aiaas-data"), description="Where embedded state lives.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the metadata database. Unset: SQLite (WAL) in the data "
        "dir. PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    artifacts_url: str | None = Field(
        None,
        description="fsspec URL of the artifact store. Unset: DATA_DIR/artifacts. "
        "Scale-out: s3://bucket/prefix",
    )
    host: str = Field("127.0.0.1", description="Address `aiaas serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `aiaas serve` binds.")
    log_format: Literal["console", "json"] = Field(
        "console", description="Readable console lines or one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    metrics_token: SecretStr | None = Field(
        None, description="If set, GET /metrics requires `Authorization: Bearer <token>`."
    )
    limits: Limits = Field(default_factory=Limits, description="Request limits.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Credentials.")
    data: DataSettings = Field(default_factory=DataSettings, description="Data limits.")
    jobs: JobsSettings = Field(default_factory=JobsSettings, description="Jobs and training.")
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings, description="Model uploads."
    )
    serving: ServingSettings = Field(
        default_factory=ServingSettings, description="Endpoints and predictions."
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where a training job's trials run: in its sandboxed training process "
        "(local) or as Ray tasks on a Ray cluster (ray).",
    )
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("AIAAS_RAY_ADDRESS", "RAY_ADDRESS", "ray_address"),
        description="Ray cluster address (`RAY_ADDRESS` is read too). Unset with "
        "executor=ray: the worker starts a local Ray.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'aiaas.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.data_dir / "artifacts")

    def secret_key(self) -> bytes:
        """The signing key: configured, or generated once into the data dir."""
        if self.auth.secret_key is not None:
            value = self.auth.secret_key.get_secret_value()
            if self.env == "prod" and len(value) < 32:
                raise ValueError("AIAAS_AUTH__SECRET_KEY must be at least 32 characters in prod")
            return value.encode()
        path = self.data_dir / ".secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(tmp, path)  # first writer wins; never overwrite an existing key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own and inject them)."""
    return Settings()
