"""Shared helpers for the bench scripts: a private nats-server, timing, and a report printer.

Every script measures its subject *and* a raw baseline in the same run and prints the ratio:
these machines are noisy, so an absolute time alone means little.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.embedded import EmbeddedNats  # noqa: E402


@contextmanager
def nats_server():
    with tempfile.TemporaryDirectory(prefix="inferlab-bench-") as tmp:
        server = EmbeddedNats(Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            yield server, Path(tmp)
        finally:
            server.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
