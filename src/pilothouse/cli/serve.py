"""``pilothouse serve`` and ``pilothouse demo``: run the service in this process."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.panel import Panel

from pilothouse.errors import ConfigError
from pilothouse.settings import DEFAULT_DATA_DIR, Settings, load_settings

if TYPE_CHECKING:
    from pilothouse.services import Services

err = Console(stderr=True)

HostOpt = Annotated[str | None, typer.Option("--host", help="Address to bind [default: 127.0.0.1]")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port to bind [default: 7450]")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", exists=True, dir_okay=False, help="YAML settings file"),
]


def _settings(
    config: Path | None, host: str | None, port: int | None, data_dir: Path | None
) -> Settings:
    try:
        return load_settings(config, {"host": host, "port": port, "data_dir": data_dir})
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def run_server(settings: Settings, *, banner: str) -> None:
    """Run uvicorn on ``settings`` until interrupted."""

    async def announce(services: Services) -> None:
        result = services.bootstrap_result
        url = f"http://{settings.host}:{settings.port}"
        lines = [f"{banner} on [bold]{url}[/bold]", f"store: {_describe_store(settings)}"]
        err.print(Panel("\n".join(lines), title="Pilothouse", expand=False))
        if result is not None and result.owner_token:
            err.print("First start: an owner key was created. It is shown [bold]once[/bold]:")
            err.print(f"  [bold green]{result.owner_token}[/bold green]", soft_wrap=True)
            err.print(f"  export PILOTHOUSE_URL={url} PILOTHOUSE_API_KEY=<the key above>")
        if result is not None and result.created and settings.admin_password is None:
            # No admin_password: the first owner's is made now, and shown once.
            from pilothouse.web.passwords import set_owner_password

            password = secrets.token_urlsafe(12)
            await set_owner_password(services.store, result.org_id, password, services.clock.now())
            err.print(
                f"The dashboard: {url}/ signs in owner@localhost with the password"
                f" [bold green]{password}[/bold green] (shown once; change it with"
                " `pilothouse users set-password`)."
            )

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    # Imported here so that client commands (which never serve) start fast.
    import uvicorn

    from pilothouse.app import build_app

    app = build_app(settings, on_started=announce)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        proxy_headers=False,
        server_header=False,
        access_log=settings.access_log,
        timeout_keep_alive=settings.keep_alive_seconds,
        lifespan="on",
    )
    uvicorn.Server(config).run()


def _describe_store(settings: Settings) -> str:
    if settings.database_url:
        return "PostgreSQL" if "postgres" in settings.database_url else settings.database_url
    return f"SQLite in {settings.data_dir}"


def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help=f"SQLite data directory [default: {DEFAULT_DATA_DIR}]"),
    ] = None,
) -> None:
    """Run the Pilothouse server (SQLite in --data-dir unless PILOTHOUSE_DATABASE_URL is set)."""
    run_server(_settings(config, host, port, data_dir), banner="Pilothouse is serving")


DEMO_PASSWORD = "pilothouse-demo"  # a demo's, printed every start: never a real install's


def demo(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo's SQLite store lives")
    ] = Path(".pilothouse-demo"),
) -> None:
    """Run Pilothouse on a demo store seeded with teams, users and sessions."""
    from pilothouse.demo import seed_demo

    settings = _settings(None, host, port, data_dir).model_copy(
        update={"database_url": None, "admin_password": SecretStr(DEMO_PASSWORD)}
    )
    token = seed_demo(settings)
    err.print(
        f"Demo owner key (kept in {data_dir}/demo-owner-key): [bold green]{token}[/bold green]"
    )
    err.print(
        f"Dashboard: sign in as owner@localhost with the password [bold green]{DEMO_PASSWORD}"
        "[/bold green]"
    )
    run_server(settings, banner="Pilothouse demo is serving")
