"""Operator commands for the platform itself: `tutti stack`, `tutti topics`, `tutti schemas`,
`tutti config`. Output is written for a newcomer: what happened, where, what to do next."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.admin import check_schemas, create_topics, raise_on_findings, register_schemas
from orchestrator.config import Settings, load_settings
from orchestrator.stack import LocalStack

__all__ = ["config_group", "demo", "schemas", "stack", "topics"]

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TUTTI_CONFIG",
    help="TOML config file (default: $TUTTI_CONFIG; env vars TUTTI_<SECTION>_<NAME> win).",
)


def settings_from(config_path: Path | None) -> Settings:
    return load_settings(config_path)


@click.group()
def stack() -> None:
    """Run a local Kafka broker and schema registry (fetched with Maven, no Docker)."""


secure_option = click.option(
    "--secure",
    is_flag=True,
    help="Also a SASL_SSL listener (TLS, SCRAM-SHA-256/512 and PLAIN), as a secured cluster.",
)


@stack.command("up")
@config_option
@secure_option
def stack_up(config_path: Path | None, secure: bool) -> None:
    """Start the broker and the registry (no-op for what is already running)."""
    local = LocalStack(settings_from(config_path).stack, echo=click.echo)
    for s in local.up(secure=secure):
        click.echo(s.line())
    click.echo(f"\nKafka:    {local.bootstrap_servers}\nRegistry: {local.registry_url}")
    if local.runs_secure:
        click.echo(
            f"Secured:  SASL_SSL on {local.secure_bootstrap_servers} as user "
            f"{local.secure.user!r} (password in {local.secure.password_file}, CA "
            f'{local.secure.ca_pem}); `eval "$(tutti stack env --secure)"` points clients at it'
        )
    click.echo("Next: `tutti topics create`, then `tutti stack down` when done.")


@stack.command("down")
@config_option
def stack_down(config_path: Path | None) -> None:
    """Stop the broker and registry this stack started (data is kept)."""
    local = LocalStack(settings_from(config_path).stack, echo=click.echo)
    stopped = local.down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


@stack.command("status")
@config_option
def stack_status(config_path: Path | None) -> None:
    """Show whether the broker and registry run and answer. Exit 1 if not both ready."""
    local = LocalStack(settings_from(config_path).stack, echo=click.echo)
    statuses = local.status()
    for s in statuses:
        click.echo(s.line())
    if not all(s.ready for s in statuses):
        raise click.exceptions.Exit(1)


@stack.command("env")
@config_option
@click.option(
    "--secure", is_flag=True, help="Point clients at the SASL_SSL listener (`stack up --secure`)."
)
def stack_env(config_path: Path | None, secure: bool) -> None:
    """Print shell exports pointing clients and tests at the local stack (eval it)."""
    local = LocalStack(settings_from(config_path).stack, echo=click.echo)
    click.echo(f"export KAFKA_BOOTSTRAP_SERVERS={local.bootstrap_servers}")
    click.echo(f"export SCHEMA_REGISTRY_URL={local.registry_url}")
    if secure:
        if not local.secure.exists():
            raise click.ClickException(
                "the stack has no secure listener: `tutti stack up --secure`"
            )
        for name, value in local.secure.client_env(local.secure_bootstrap_servers).items():
            click.echo(f"export {name}={value}")


@stack.command("reset")
@config_option
@click.confirmation_option(prompt="Delete all local broker and registry data?")
def stack_reset(config_path: Path | None) -> None:
    """Stop the stack and delete its data (the downloaded jars stay cached)."""
    LocalStack(settings_from(config_path).stack, echo=click.echo).reset()
    click.echo("local stack data deleted")


@click.group()
def topics() -> None:
    """Kafka topics: every topic Tutti uses is listed in orchestrator/topics.py."""


@topics.command("create")
@config_option
def topics_create(config_path: Path | None) -> None:
    """Create missing topics; report the ones that exist. Safe to run again."""
    settings = settings_from(config_path)
    reports = create_topics(settings)
    for r in reports:
        verb = "created" if r.created else "exists "
        policy = r.spec.config.get("cleanup.policy", "delete")
        warn = "" if r.partitions == r.spec.partitions else f"  (! expected {r.spec.partitions})"
        click.echo(f"{verb}  {r.spec.name:<34} {r.partitions:>3} partitions  {policy:<8}{warn}")
    n = sum(r.created for r in reports)
    click.echo(
        f"\n{n} created, {len(reports) - n} already there ({settings.kafka.bootstrap_servers})"
    )


@topics.command("list")
@config_option
def topics_list(config_path: Path | None) -> None:
    """List the topics Tutti uses (from config; does not contact Kafka)."""
    from orchestrator.topics import Topics

    for spec in Topics(settings_from(config_path).topics).all():
        click.echo(f"{spec.name:<34} {spec.partitions:>3}  {spec.keyed_by:<10} {spec.purpose}")


@click.group()
def schemas() -> None:
    """The Avro contract in schemas/: register it, check changes for compatibility."""


@schemas.command("register")
@config_option
def schemas_register(config_path: Path | None) -> None:
    """Register every schema in the registry under <topic>-value subjects."""
    settings = settings_from(config_path)
    ids = register_schemas(settings)
    for subject, schema_id in sorted(ids.items()):
        click.echo(f"{subject:<40} id {schema_id}")
    click.echo(f"\n{len(ids)} subjects registered at {settings.kafka.schema_registry_url}")


@schemas.command("check")
@config_option
@click.option("--registry/--no-registry", default=False, help="Also compare with the registry.")
def schemas_check(config_path: Path | None, registry: bool) -> None:
    """Fail if a schema change breaks readers or writers of any previous version."""
    settings = settings_from(config_path)
    raise_on_findings(check_schemas(settings, use_registry=registry))
    click.echo("schemas are compatible with every previous version")


@click.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@config_option
def config_show(config_path: Path | None) -> None:
    """Print every setting with its effective value (secrets masked)."""
    for name, value in settings_from(config_path).describe().items():
        click.echo(f"{name:<32} {value}")


@click.command()
@config_option
@click.option("--customers", default=200, show_default=True, help="Customers per round.")
@click.option("--rate", default=50.0, show_default=True, help="Events per second (0: no limit).")
@click.option("--rounds", default=0, help="Rounds of traffic (0: until Ctrl-C).")
@click.option("--seed", default=7, show_default=True)
def demo(config_path: Path | None, customers: int, rate: float, rounds: int, seed: int) -> None:
    """Produce realistic demo traffic (many customers, several channels) until Ctrl-C."""
    from collections import Counter

    from orchestrator.demo import demo_events, produce_events

    settings = settings_from(config_path)
    counts: Counter[str] = Counter()
    total = 0

    def tick(event: dict[str, object]) -> None:
        nonlocal total
        total += 1
        counts[f"{event['channel']}/{event['event_type']}"] += 1
        if total % 500 == 0:
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(4))
            click.echo(f"{total:>7} events produced  (top: {top})")

    n = 0
    click.echo(
        f"producing demo events to {settings.kafka.bootstrap_servers} "
        f"({settings.kafka.framing} framing); Ctrl-C to stop"
    )
    try:
        while rounds == 0 or n < rounds:
            events = demo_events(customers, seed=seed + n)
            # Each round is a new cohort of customers, so ids never collide across rounds.
            for e in events:
                e["event_id"] = f"r{seed + n}-{e['event_id']}"
                for k in ("customer_id",):
                    if e["identities"].get(k):
                        e["identities"][k] = f"r{seed + n}-{e['identities'][k]}"
            produce_events(settings, events, rate=rate or None, on_sent=tick, retime=True)
            n += 1
    except KeyboardInterrupt:
        pass
    click.echo(f"{total} events produced")
