"""The ``pilothouse`` command: wiring of the command groups."""

from __future__ import annotations

import typer

from pilothouse import __version__
from pilothouse.cli import (
    approvals,
    audit,
    budgets,
    hook,
    keys,
    mcp,
    orgs,
    policy,
    run,
    secrets,
    serve,
    sessions,
    spend,
    teams,
    users,
)

app = typer.Typer(
    name="pilothouse",
    help="Pilothouse: the control plane for software agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("demo")(serve.demo)
app.command("whoami")(keys.whoami)
app.add_typer(keys.app)
app.add_typer(users.app)
app.add_typer(teams.app)
app.add_typer(sessions.app)
app.add_typer(audit.app)
app.add_typer(orgs.app)
app.add_typer(budgets.app)
app.add_typer(policy.app)
app.add_typer(approvals.app)
app.add_typer(secrets.app)
app.add_typer(mcp.app)
app.command("hook")(hook.hook)
app.command("run", context_settings={"allow_interspersed_args": False})(run.run)
app.command("spend")(spend.spend)
app.command("usage")(spend.usage)


@app.command("version")
def version() -> None:
    """Print the Pilothouse version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point of the console script."""
    app()
