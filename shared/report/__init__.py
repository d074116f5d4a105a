"""Model reports: ``inferlab report REF`` (terminal) and ``inferlab report REF --html FILE``
(one self-contained page of plots). ``collect`` gathers the figures from the running platform;
``render_html`` and ``render_text`` are pure."""

from shared.report.data import ModelReport, collect
from shared.report.html import render_html
from shared.report.text import render_text

__all__ = ["ModelReport", "collect", "render_html", "render_text"]
