"""Generated docs stay in sync with the code (regenerate with `python -m shared.docgen`)."""

from __future__ import annotations

import msgspec
import pytest

from shared.contracts.base import decode, encode
from shared.contracts.catalogue import CATALOGUE
from shared.docgen import EVENTS_DOC, OPERATIONS_DOC, events_markdown, example, operations_with_settings


def test_events_doc_is_current() -> None:
    assert EVENTS_DOC.read_text() == events_markdown(), "run: python -m shared.docgen"


def test_operations_settings_table_is_current() -> None:
    text = OPERATIONS_DOC.read_text()
    assert operations_with_settings(text) == text, "run: python -m shared.docgen"


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.subject)
def test_every_documented_example_decodes(spec) -> None:
    message = decode(msgspec.json.encode(example(spec.message)), spec.message)
    assert decode(encode(message), spec.message) == message
