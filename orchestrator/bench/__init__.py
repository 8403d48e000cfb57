"""`tutti bench`: the worker's throughput and latency measured next to the ceilings it runs
under, in one run on one machine (see :mod:`orchestrator.bench.run`)."""
