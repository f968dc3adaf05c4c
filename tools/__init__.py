"""Developer tools: benchmarks, the lent-GPU checks and mutation testing (not installed)."""
