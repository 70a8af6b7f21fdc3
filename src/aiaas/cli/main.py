"""``aiaas``: serve the platform, migrate, administer; client and AutoML commands.

Errors from aiaas become one line on stderr and exit code 2 (bad input) or 1 (anything
else), never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from aiaas.errors import AiaasError, Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from aiaas.auth.service import Bootstrap

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="aiaas",
    help="aiaas — self-hosted AI-as-a-Service. Settings come from AIAAS_* variables or flags.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Metadata database.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Administer organizations, users and keys directly.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="AIAAS_DATA_DIR", help="Data directory.", show_default=False),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Map aiaas errors to a one-line message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InvalidInput, Conflict, NotFound) as exc:
            raise fail(exc.detail, 2) from None
        except AiaasError as exc:
            raise fail(exc.detail, 1) from None

    return wrapper  # type: ignore[return-value]


def _settings(data_dir: Path | None) -> Any:
    from aiaas.settings import Settings

    return Settings(data_dir=data_dir) if data_dir else Settings()


def _migrated_session(settings: Any) -> Any:
    from aiaas.db import get_session_factory
    from aiaas.db.migrate import upgrade

    upgrade(settings.resolved_database_url)
    return get_session_factory(settings.resolved_database_url)()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.", envvar="AIAAS_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Port.", envvar="AIAAS_PORT")] = None,
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    job_workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="Job workers in this process (default: AIAAS_JOBS__WORKERS, 1; 0: none).",
            show_default=False,
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Also set up, in the background, a demo: organization 'demo', a sample "
            "dataset, a model trained on it and the endpoint 'demo'; prints a ready curl line.",
        ),
    ] = False,
) -> None:
    """Migrate the database and serve the platform (API, docs, metrics) with embedded job
    workers (and, with --demo, a demo model behind an endpoint)."""
    import os

    import uvicorn

    from aiaas.auth import service as auth_service
    from aiaas.auth.passwords import Passwords
    from aiaas.logging import configure_logging

    os.umask(0o077)  # the database, datasets and keys it writes are the service user's only
    settings = _settings(data_dir)
    if data_dir:
        os.environ["AIAAS_DATA_DIR"] = str(settings.data_dir)  # for worker processes
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    host = host or settings.host
    port = port or settings.port
    with _migrated_session(settings) as session, session.begin():
        passwords = Passwords(
            settings.auth.argon2_time_cost,
            settings.auth.argon2_memory_kib,
            settings.auth.argon2_parallelism,
        )
        created = auth_service.bootstrap_if_empty(session, passwords)
        from aiaas.data.scratch import sweep_scratch
        from aiaas.data.sweep import sweep_orphans
        from aiaas.storage import get_store

        # Crash leftovers: scratch of dead processes (provably dead: at once), stored files
        # without a version row (after orphan_min_age_s: another replica may be storing them).
        store = get_store(settings.resolved_artifacts_url)
        sweep_scratch(settings, older_than_s=settings.data.orphan_min_age_s)
        sweep_orphans(session, store, older_than_s=settings.data.orphan_min_age_s)
    _sweep_model_files(settings, store)
    base = f"http://{host}:{port}"
    if created is not None:
        typer.echo(_first_start_message(created, base))
    typer.echo(f"aiaas serving on {base}  (docs: {base}/docs, metrics: {base}/metrics)")
    _start_sweeper(settings, store)
    import threading

    from aiaas.jobs import runtime

    stop_jobs = threading.Event()
    count = settings.jobs.workers if job_workers is None else job_workers
    runtime.start(settings, count, stop_jobs)
    if demo:
        from aiaas.cli import demo as demo_setup

        demo_setup.start(settings, base, job_workers=count)
    uvicorn.run(
        "aiaas.api.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn": one header less per answer, no banner
        http="aiaas.api.server:GuardedHttpToolsProtocol",  # header size and time limits
    )


@app.command()
def worker(
    count: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Run job workers alone (no API), e.g. on another machine that reaches the database
    and the artifact store; stops on SIGTERM or Ctrl-C."""
    import os
    import signal
    import threading

    from aiaas.db.migrate import upgrade
    from aiaas.jobs import runtime
    from aiaas.logging import configure_logging

    os.umask(0o077)
    settings = _settings(data_dir)
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    upgrade(settings.resolved_database_url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start(settings, count, stop)
    typer.echo(f"aiaas worker: {count} job worker(s) running; Ctrl-C to stop")
    while not stop.wait(1.0):
        pass
    typer.echo("aiaas worker: stopping (running jobs are taken up again by other workers)")


def _first_start_message(created: Bootstrap, base: str) -> str:
    """What the first start prints once: the owner's account and how to call the API."""
    return (
        "\nFirst start: created organization "
        f"'{created.org_slug}' and its owner account (shown once — store it now):\n"
        f"  email:    {created.email}\n  password: {created.password}\n\n"
        "Log in and call the API:\n"
        f"  TOKEN=$(curl -s -d 'username={created.email}' --data-urlencode "
        f"'password=<password>' {base}/api/v1/auth/token | python3 -c "
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f'  curl -H "Authorization: Bearer $TOKEN" {base}/api/v1/me\n'
        "Or create an API key:\n"
        f"  aiaas admin create-api-key --org {created.org_slug} --role admin --name cli\n"
    )


def _sweep_model_files(settings: Any, store: Any) -> None:
    """Stored model files without a version row (a crash between bytes and row, or after a
    deleted version's commit), once untouched for ``orphan_min_age_s``."""
    from aiaas.db import get_session_factory
    from aiaas.registry.sweep import sweep_orphans

    factory = get_session_factory(settings.resolved_database_url)
    sweep_orphans(factory, store, older_than_s=settings.data.orphan_min_age_s)


def _start_sweeper(settings: Any, store: Any) -> None:
    """Sweep crash leftovers every ``sweep_interval_s`` in this (the serving) process."""
    import threading

    from aiaas.data.sweep import sweep_periodically

    if settings.data.sweep_interval_s > 0:
        stop = threading.Event()  # never set: the daemon thread ends with the process
        models = (lambda: _sweep_model_files(settings, store),)  # the registry's leftovers
        threading.Thread(
            target=sweep_periodically,
            args=(settings, store, stop, models),
            name="sweeper",
            daemon=True,
        ).start()


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    data_dir: DataDir = None,
) -> None:
    """Apply database migrations."""
    from aiaas.db.migrate import current_revision, upgrade

    settings = _settings(data_dir)
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {current_revision(settings.resolved_database_url)}")


@admin_app.command("create-org")
@handle_errors
def create_org(
    slug: Annotated[str, typer.Argument(help="Short name: lowercase letters, digits, '-'.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an organization; prints its id."""
    from aiaas.auth import service as auth_service

    with _migrated_session(_settings(data_dir)) as session, session.begin():
        org = auth_service.create_org(session, slug, name)
        typer.echo(org.id)


def _role(value: str) -> Any:
    from aiaas.auth.permissions import Role

    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; choose one of: {', '.join(r.value for r in Role)}"
        ) from None


@admin_app.command("create-user")
@handle_errors
def create_user(
    email: Annotated[str, typer.Argument(help="Login email.")],
    org: Annotated[str, typer.Option("--org", help="Organization slug.")],
    role: Annotated[str, typer.Option("--role", help="owner, admin, developer or viewer.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a user account in an organization (accounts are per organization: the same
    e-mail in another organization is another account). Without --password-stdin a password
    is generated."""
    import secrets

    from aiaas.auth import service as auth_service
    from aiaas.auth.passwords import Passwords
    from aiaas.auth.schemas import MemberCreate

    settings = _settings(data_dir)
    role_value = _role(role)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = secrets.token_urlsafe(18), True
    try:
        MemberCreate(email=email, role=role_value, password=password)
    except ValueError:
        raise InvalidInput(f"invalid email address {email!r}") from None
    with _migrated_session(settings) as session, session.begin():
        organization = auth_service.get_org_by_slug(session, org)
        passwords = Passwords(
            settings.auth.argon2_time_cost,
            settings.auth.argon2_memory_kib,
            settings.auth.argon2_parallelism,
        )
        user = auth_service.create_user(
            session,
            passwords,
            organization,
            email,
            password,
            min_length=settings.auth.min_password_length,
        )
        auth_service.add_membership(session, organization, user, role_value)
    typer.echo(f"created user {user.email} ({user.id}) as {role_value.value} in {org}", err=True)
    if generated:
        typer.echo(password)


@admin_app.command("create-api-key")
@handle_errors
def create_api_key(
    org: Annotated[str, typer.Option("--org", help="Organization slug.")],
    role: Annotated[str, typer.Option("--role", help="owner, admin, developer or viewer.")],
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "cli",
    data_dir: DataDir = None,
) -> None:
    """Create an organization-owned (service) API key; prints the key alone on stdout (shown
    once). It belongs to no member, so no membership change ends it: revoke it when done."""
    from aiaas.auth import service as auth_service

    role_value = _role(role)
    if not name.strip() or len(name) > 200:
        raise InvalidInput("name must be 1-200 characters")
    with _migrated_session(_settings(data_dir)) as session, session.begin():
        organization = auth_service.get_org_by_slug(session, org)
        row, key = auth_service.issue_api_key(session, organization, role=role_value, name=name)
    typer.echo(
        f"created API key {row.id} ({row.prefix}…) as {role_value.value} in {org} "
        "(organization-owned: no member's departure ends it)",
        err=True,
    )
    typer.echo(key)


def _register_automl() -> None:
    # no ImportError guard: a broken install must fail loudly, not hide `aiaas automl`
    from aiaas.cli.automl import app as automl_app

    app.add_typer(automl_app, name="automl")


_register_automl()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
