"""``Client.register_sklearn`` and ``Client.register_torch``: export what users have to ONNX
(shared/exporters.py) and register it, the exporter's name and version in the record's
metadata."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.exporters import Exported, export_sklearn, export_torch

if TYPE_CHECKING:
    from shared.contracts.registry import ModelRecord


class ExportApi:
    if TYPE_CHECKING:
        # Client.register (shared/sdk.py), declared loosely for the type checker.
        register: Callable[..., Awaitable[ModelRecord | str]]

    async def register_sklearn(
        self, estimator: Any, example: Any, *, name: str, version: str, zipmap: bool = False, **register: Any
    ) -> ModelRecord | str:
        """Export a fitted scikit-learn estimator (inputs shaped like ``example``, a few rows of
        X) with skl2onnx and register it; ``register`` takes ``Client.register``'s options
        (``dataset``, ``task``, ``metadata``, ``tags``, ``wait``...)."""
        with tempfile.TemporaryDirectory(prefix="inferlab-export-") as folder:
            path = Path(folder) / f"{name}.onnx"
            exported = await asyncio.to_thread(export_sklearn, estimator, example, path, zipmap=zipmap)
            return await self._register_exported(exported, name=name, version=version, **register)

    async def register_torch(
        self, module: Any, example_input: Any, *, name: str, version: str, **register: Any
    ) -> ModelRecord | str:
        """Export a PyTorch module traced on ``example_input`` (dynamic batch) with torch.onnx
        and register it; ``register`` as for ``register_sklearn``."""
        with tempfile.TemporaryDirectory(prefix="inferlab-export-") as folder:
            path = Path(folder) / f"{name}.onnx"
            exported = await asyncio.to_thread(export_torch, module, example_input, path)
            return await self._register_exported(exported, name=name, version=version, **register)

    async def _register_exported(
        self, exported: Exported, *, name: str, version: str, **register: Any
    ) -> ModelRecord | str:
        metadata = {**exported.metadata(), **(register.pop("metadata", None) or {})}
        return await self.register(exported.path, name=name, version=version, metadata=metadata, **register)
