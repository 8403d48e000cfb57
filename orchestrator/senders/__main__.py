"""`python -m orchestrator.senders --channel email`: the sender without the `tutti` wrapper."""

from __future__ import annotations

import sys

import click

from orchestrator.errors import TuttiError
from orchestrator.senders.cli import sender


def main() -> None:
    try:
        sender.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except TuttiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
