"""Normalising a source graph before any profile sees it.

IR versions below 4 require every initializer to be listed among the graph inputs too, which
makes each weight an input a caller may override. ONNX Runtime honours that: it cannot fold
such weights as constants, and the graph its optimiser saves then demands ``..._SHAPE``
inputs that no caller has. Removing the initializers from the inputs (and stating IR 4, the
first version that allows it) gives the same function with constant weights; it is exact.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from services.converter.profiles.base import load_model, save_model

# IR 4 is the first version where an initializer need not be a graph input.
FIRST_IR_WITH_CONSTANT_INITIALIZERS = 4


def initializers_as_inputs(model: onnx.ModelProto) -> list[str]:
    weights = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name in weights]


def constant_initializers(model: onnx.ModelProto) -> list[str]:
    """Drop initializers from the graph inputs of an IR < 4 model, in place. Returns what was
    changed (empty when nothing needed it)."""
    if model.ir_version >= FIRST_IR_WITH_CONSTANT_INITIALIZERS:
        return []
    listed = set(initializers_as_inputs(model))
    changes = []
    if listed:
        keep = [i for i in model.graph.input if i.name not in listed]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        changes.append(f"removed {len(listed)} initializers from the graph inputs of an IR {model.ir_version} graph")
    changes.append(f"IR version {model.ir_version} -> {FIRST_IR_WITH_CONSTANT_INITIALIZERS}")
    model.ir_version = FIRST_IR_WITH_CONSTANT_INITIALIZERS
    return changes


def ir_version_of(path: Path) -> int:
    """The IR version without parsing the whole model: it is field 1 of ModelProto, which
    onnx writes first."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 2 and head[0] == 0x08:  # field 1, varint
        value, shift = 0, 0
        for byte in head[1:]:
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
    return int(onnx.load(str(path), load_external_data=False).ir_version)


def normalize_source(source: Path, workdir: Path) -> tuple[Path, list[str]]:
    """The file profiles should convert: ``source`` itself, or a normalised copy under
    ``workdir`` with the list of changes."""
    if ir_version_of(source) >= FIRST_IR_WITH_CONSTANT_INITIALIZERS:
        return source, []
    model = load_model(source)
    changes = constant_initializers(model)
    if not changes:
        return source, []
    return save_model(model, workdir / "source.normalized.onnx"), changes
