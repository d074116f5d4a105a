"""SDK methods of the benchmarker (mixed into ``shared.sdk.Client``)."""

from __future__ import annotations


class BenchmarkApi:
    """Methods that talk to the benchmarker."""
