"""The ``benchmint`` command: a thin typer layer over the Python API (one module per command group)."""
