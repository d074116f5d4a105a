"""Service logs (shared/log.py) keep working when the program that configured them swapped
``sys.stderr`` for a while: the CLI's ``main`` run in-process by a test or a notebook."""

from __future__ import annotations

import io
import sys

import pytest

from shared.log import configure, get_logger


def test_log_lines_go_to_the_current_stderr_after_the_configuring_one_was_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    borrowed = io.StringIO()
    monkeypatch.setattr(sys, "stderr", borrowed)
    configure("cli", "warning", "json")
    borrowed.close()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    try:
        get_logger(component="worker").error("dead_lettered", subject="model.register")
        assert '"event": "dead_lettered"' in later.getvalue()
    finally:
        monkeypatch.undo()
        configure("tests", "warning", "console")
