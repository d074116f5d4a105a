"""The benchmarker: measurements under a statistical protocol, the DuckDB performance history,
regression and anomaly alerts, read-only SQL."""

SERVICE = "benchmarker"
