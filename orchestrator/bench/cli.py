"""`tutti bench`: the command behind `make bench`."""

from __future__ import annotations

from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]


@click.command()
@click.option("--customers", default=5000, show_default=True, help="Customers in the backlog.")
@click.option("--events", type=int, default=None, help="Cut the backlog to N events (a short run).")
@click.option("--partitions", default=12, show_default=True)
@click.option("--latency-seconds", default=40.0, show_default=True)
@click.option(
    "--latency-rate",
    "latency_rates",
    type=float,
    multiple=True,
    help="Also measure the latency at this offered load (events/s); repeatable.",
)
@click.option("--skip-two-workers", is_flag=True, help="Leave out (e), the two-worker run.")
@click.option(
    "--journeys",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=ROOT / "journeys",
    show_default=True,
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "results",
    show_default=True,
)
def bench(
    customers: int,
    events: int | None,
    partitions: int,
    latency_seconds: float,
    latency_rates: tuple[float, ...],
    skip_two_workers: bool,
    journeys: Path,
    out_dir: Path,
) -> None:
    """Measure the worker next to the raw and Faust ceilings, in one run (needs Kafka and the
    registry: `tutti stack up`). Writes results/bench.json and results/bench.md."""
    from orchestrator.bench.run import BenchOptions, markdown, run_bench, write_results

    options = BenchOptions(
        customers=customers,
        events=events,
        partitions=partitions,
        latency_seconds=latency_seconds,
        latency_rates=latency_rates,
        journeys=journeys,
        skip_two_workers=skip_two_workers,
    )
    result = run_bench(options, log=lambda line: click.echo(line, err=True))
    j, md = write_results(result, out_dir)
    click.echo(markdown(result))
    click.echo(f"-> {j} {md}", err=True)
