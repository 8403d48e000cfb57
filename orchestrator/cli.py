"""`tutti` — the one command line: stack, topics, schemas, journeys, simulate, worker, senders.

Each command group lives next to what it drives; this module only assembles them.
"""

from __future__ import annotations

import sys

import click

from orchestrator.errors import TuttiError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tutti")
def cli() -> None:
    """Tutti: real-time omnichannel customer-journey orchestration on Kafka."""


def _register() -> None:
    # Command groups (one line each; keep sorted).
    from orchestrator.ops_cli import config_group, demo, schemas, stack, topics

    for command in (config_group, demo, schemas, stack, topics):
        cli.add_command(command)
    from orchestrator.traffic_cli import actions, dlq, produce, report

    for command in (actions, dlq, produce, report):
        cli.add_command(command)
    from orchestrator.senders.cli import sender

    cli.add_command(sender)
    from orchestrator.journeys_cli import journeys, simulate

    cli.add_command(journeys)
    cli.add_command(simulate)
    from orchestrator.control_cli import audit, control, journeys_list, journeys_publish

    journeys.add_command(journeys_publish)
    journeys.add_command(journeys_list)
    cli.add_command(control)
    cli.add_command(audit)
    from orchestrator.segments_cli import segments

    cli.add_command(segments)
    from agents.cli import worker

    cli.add_command(worker)
    from orchestrator.watch_cli import watch

    cli.add_command(watch)
    from orchestrator.customer_cli import customer

    cli.add_command(customer)
    from orchestrator.bench.cli import bench

    cli.add_command(bench)
    from orchestrator.unsubscribe.cli import unsubscribe_server

    cli.add_command(unsubscribe_server)
    from orchestrator.feedback.cli import feedback_server

    cli.add_command(feedback_server)
    from orchestrator.templates_cli import templates

    cli.add_command(templates)
    from orchestrator.model_cli import model

    cli.add_command(model)


_register()


def main() -> None:
    """Console-script entry point: TuttiErrors become one clear line and exit code 2."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TuttiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
