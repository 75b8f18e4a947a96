"""The ``pilothouse`` command's entry point: the agents' hook first, the whole CLI otherwise.

``pilothouse hook ...`` runs around every tool call of an agent; answered here it skips loading
the CLI and the settings (about half a second of imports), see ``pilothouse.hook``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the ``pilothouse`` command."""
    if sys.argv[1:2] == ["hook"]:
        from pilothouse.hook import fast

        status = fast(sys.argv[1:])
        if status is not None:
            raise SystemExit(status)
    from pilothouse.cli.main import main as cli

    cli()
