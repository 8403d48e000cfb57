"""`python -m orchestrator` is the `tutti` command."""

from orchestrator.cli import main

main()
