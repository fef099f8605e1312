"""LLM inference benchmarking: workloads -> schedule -> backends -> request records -> metrics."""
