"""Archive and delete of a version against the real registry and benchmarker: facts on the
stream, refusals while an alias points at it, content-addressed objects deleted only when no
other version uses them, the benchmark history kept or purged as asked, and the CLI."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.benchmarker.service import BenchmarkerService
from services.registry.service import RegistryService
from shared.artifacts import ArtifactStore, parse_object_uri
from shared.config import Settings
from shared.contracts.benchmark import BenchmarkConfig
from shared.errors import InvalidReference
from shared.sdk import Client, LifecycleRefusedError
from tests.support.models import mlp
from tests.support.services import running
from tests.test_cli import cli

QUICK = BenchmarkConfig(batch_sizes=[1], warmup_s=0.1, window_s=0.2, min_duration_s=0.4, max_duration_s=1.0)


async def _runs(client: Client, version: str) -> int:
    result = await client.sql(f"SELECT count(*) FROM benchmark_runs WHERE name = 'life' AND version = '{version}'")
    return int(result.rows[0][0])


async def test_archive_and_delete_a_version(settings: Settings, client: Client, tmp_path: Path) -> None:
    settings = settings.with_overrides(bench_auto=False)
    one = mlp(tmp_path / "one.onnx")
    two = mlp(tmp_path / "two.onnx", extra_matmuls=2)
    same_as_one = shutil.copy(one, tmp_path / "three.onnx")
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        first = await client.register(one, name="life", version="1.0.0")
        second = await client.register(two, name="life", version="2.0.0")
        await client.register(same_as_one, name="life", version="3.0.0")  # the same bytes: one stored object
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            await client.benchmark(f"life@{version}", QUICK, timeout=120)

        # Refused while an alias points at it, and for what is not an exact version.
        await client.set_alias("life@1.0.0", "production")
        with pytest.raises(LifecycleRefusedError) as refused:
            await client.archive("life@1.0.0")
        assert refused.value.code == "alias_in_use" and "life@production" in refused.value.message
        with pytest.raises(LifecycleRefusedError) as refused:
            await client.delete("life@9.9.9")
        assert refused.value.code == "unknown_model"
        with pytest.raises(InvalidReference):
            await client.delete("life@production")
        await client.remove_alias("life", "production")

        # Archive: out of listings, still resolvable exactly, history untouched.
        archived = await client.archive("life@1.0.0")
        assert archived.variants == ["base"]
        listed = {v.record.version for v in (await client.list(name="life")).models}
        assert listed == {"2.0.0", "3.0.0"}
        everything = await client.list(name="life", include_archived=True)
        assert {v.record.version for v in everything.models} == {"1.0.0", "2.0.0", "3.0.0"}
        assert (await client.get("life@1.0.0")).record.archived_at is not None
        assert await _runs(client, "1.0.0") == 1

        # Delete 1.0.0: its object is kept (3.0.0 has the same bytes), its history kept.
        deleted = await client.delete("life@1.0.0")
        shared_object = parse_object_uri(first.artifact_uri)[1]
        assert deleted.objects_deleted == [] and deleted.objects_kept == [shared_object]
        with pytest.raises(Exception, match="unknown model"):
            await client.get("life@1.0.0")
        artifacts = ArtifactStore(client.bus)
        assert await artifacts.info(shared_object) is not None
        assert await _runs(client, "1.0.0") == 1

        # Delete 2.0.0 with its history: the object goes, the benchmarker purges its rows.
        deleted = await client.delete("life@2.0.0", purge_history=True)
        own_object = parse_object_uri(second.artifact_uri)[1]
        assert deleted.objects_deleted == [own_object] and deleted.purge_history
        assert await artifacts.info(own_object) is None
        for _ in range(100):
            if await _runs(client, "2.0.0") == 0:
                break
            await asyncio.sleep(0.1)
        assert await _runs(client, "2.0.0") == 0
        assert await _runs(client, "3.0.0") == 1  # nothing else purged

        # The CLI, as an operator runs it; then the facts are on the stream.
        rc, out, err = await cli(settings, "delete", "life@3.0.0", "--purge-history")
        assert rc == 0, err
        assert "deleted life@3.0.0 (base): 1 stored object(s) deleted; history purged" in out
        assert await artifacts.info(shared_object) is None  # the last user is gone
        rc, out, err = await cli(settings, "archive", "life@3.0.0", "--json")
        assert rc != 0 and "unknown model" in err

        facts = [
            e.data["type"]
            async for e in client.events("model.>", replay=True, stored_only=True)
            if e.data and e.data.get("type", "").startswith(("model.archived", "model.deleted", "model.lifecycle"))
        ]
        assert facts.count("model.deleted") == 3 and facts.count("model.archived") == 1
        assert facts.count("model.lifecycle_refused") == 3


def test_objects_shared_with_another_version_are_kept() -> None:
    from services.registry.lifecycle import objects_to_delete, version_records
    from services.registry.store import Index
    from shared.contracts.registry import ModelRecord

    def record(version: str, variant: str, sha: str, dataset: str | None = None) -> ModelRecord:
        return ModelRecord(
            name="m",
            version=version,
            variant=variant,
            ref=f"m@{version}",
            sha256=sha * 64,
            size_bytes=1,
            artifact_uri=f"nats-obj://artifacts/sha256/{sha}",
            source_uri="x",
            dataset_uri=dataset,
        )

    index = Index()
    for r in (
        record("1.0.0", "base", "a", "nats-obj://artifacts/datasets/d"),
        record("1.0.0", "fp16", "b"),
        record("2.0.0", "base", "a", "nats-obj://other-bucket/datasets/d"),
    ):
        index.records[(r.name, r.version, r.variant)] = r
    assert [r.variant for r in version_records(index, "m", "1.0.0")] == ["base", "fp16"]
    deletable, kept = objects_to_delete(index, "m", "1.0.0", "artifacts")
    assert deletable == ["datasets/d", "sha256/b"] and kept == ["sha256/a"]
