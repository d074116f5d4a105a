"""docs/asyncapi.yaml is what the generator produces from the catalogue, and the official
AsyncAPI parser (@asyncapi/parser, installed by `make asyncapi-deps`) finds it valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.asyncapi import asyncapi_document, asyncapi_yaml, channel_address
from shared.contracts.base import Event
from shared.contracts.catalogue import CATALOGUE
from shared.docgen import ASYNCAPI_DOC
from tests.support.services import REPO

TOOLS = REPO / "tools" / "asyncapi"
INFERLAB = str(Path(sys.executable).parent / "inferlab")


def test_the_committed_document_is_current() -> None:
    assert ASYNCAPI_DOC.read_text() == asyncapi_yaml(), "run: python -m shared.docgen"


def test_the_cli_prints_the_same_document() -> None:
    done = subprocess.run([INFERLAB, "schema", "--asyncapi"], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout == ASYNCAPI_DOC.read_text()


def test_every_subject_is_a_channel_with_its_operation() -> None:
    document = yaml.safe_load(ASYNCAPI_DOC.read_text())
    assert document == asyncapi_document()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {channel_address(spec) for spec in CATALOGUE}
    assert "model.registered.{name}" in addresses
    operations = document["operations"].values()
    actions = {op["channel"]["$ref"].removeprefix("#/channels/"): op["action"] for op in operations}
    for spec in CATALOGUE:
        expected = "send" if issubclass(spec.message, Event) else "receive"
        assert actions[spec.subject.replace("<", "").replace(">", "")] == expected, spec.subject


def test_the_official_parser_finds_it_valid() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the AsyncAPI parser runs on Node.js")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.skip("@asyncapi/parser is not installed: run `make asyncapi-deps` (npm ci in tools/asyncapi)")
    done = subprocess.run(
        [node, "validate.mjs", str(ASYNCAPI_DOC)], cwd=TOOLS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid AsyncAPI 3.1.0" in done.stderr
    assert done.stdout == "", f"the parser has remarks (warnings or hints):\n{done.stdout}"
