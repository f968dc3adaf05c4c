"""Developer tools: benchmarks and simulations, run as `python -m tools.<name>`."""
