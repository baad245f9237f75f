"""Throughput benchmark of journey-processor: ``python -m bench.run`` (see bench/README.md)."""
