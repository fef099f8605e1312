"""Results layer: one RunRecord schema for every kind of run, the Parquet store, importers."""
