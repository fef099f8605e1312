"""Models built locally from configs (random weights), so benchmarks run with no network."""
