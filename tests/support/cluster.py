"""Support for the fault, cluster and security tests: quick pipeline settings, minimal valid
messages of any contract type, waiting helpers, and a fleet of service processes (replicas that
can be killed with SIGKILL and started again)."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import Any

import msgspec

from shared.config import Settings
from shared.sdk import Client
from tests.support.events import eventually, stored
from tests.support.services import ServiceProcess

__all__ = ["SERVICES", "Fleet", "eventually", "minimal_payload", "padded", "quick", "stored"]

SERVICES = ("registry", "converter", "benchmarker", "validator")


def quick(settings: Settings, **changes: Any) -> Settings:
    """Every service on small budgets: one conversion profile, short benchmark windows, small
    validation samples. The code paths are the same as with the defaults."""
    base: dict[str, Any] = {
        "converter_profiles": ("ort-opt",),
        "converter_parity_samples": 32,
        "bench_warmup_s": 0.02,
        "bench_window_s": 0.05,
        "bench_min_duration_s": 0.15,
        "bench_max_duration_s": 0.5,
        "validator_attack_queries": 50,
        "validator_attack_samples": 8,
        "validator_attack_time_s": 2.0,
        "validator_bootstrap": 100,
        "validator_noise_samples": 64,
        "validator_structural_samples": 4,
    }
    base.update(changes)
    return settings.with_overrides(**base)


# --- minimal valid messages -----------------------------------------------------------------------


def minimal_payload(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The smallest JSON object that decodes as ``kind``: every required field filled with a
    plain value of its type, the type tag set. Used to build messages that are valid but
    semantically empty (to pad to a size limit, or to mutate into wrong types)."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    obj = _value(info)
    msgspec.convert(obj, kind)  # the sample must really decode
    return obj


def _value(t: msgspec.inspect.Type) -> Any:
    i = msgspec.inspect
    if isinstance(t, i.StructType):
        obj: dict[str, Any] = {}
        if t.tag_field is not None:
            obj[t.tag_field] = t.tag
        for field in t.fields:
            if field.required:
                obj[field.encode_name] = _value(field.type)
        return obj
    if isinstance(t, i.UnionType):
        options = [o for o in t.types if not isinstance(o, i.NoneType)]
        return _value(options[0]) if options else None
    if isinstance(t, i.StrType):
        return "poison" + "x" * max(0, (t.min_length or 0) - 6)
    if isinstance(t, i.BoolType):
        return False
    if isinstance(t, i.IntType):
        return max(1, t.ge or 0, (t.gt or 0) + 1)
    if isinstance(t, i.FloatType):
        return float(max(1.0, t.ge or 0.0))
    if isinstance(t, i.DateTimeType):
        return dt.datetime.now(dt.UTC).isoformat()
    if isinstance(t, i.EnumType):
        member = next(iter(t.cls))
        return member.value if isinstance(member, enum.Enum) else member
    if isinstance(t, i.LiteralType):
        return t.values[0]
    if isinstance(t, (i.ListType, i.SetType, i.FrozenSetType, i.VarTupleType)):
        return [_value(t.item_type) for _ in range(t.min_length or 0)]
    if isinstance(t, i.DictType):
        return {}
    if isinstance(t, i.TupleType):
        return [_value(x) for x in t.item_types]
    if isinstance(t, (i.AnyType, i.NoneType)):
        return None
    if isinstance(t, (i.BytesType, i.ByteArrayType)):
        return ""
    raise TypeError(f"no sample value for {t!r}")


def padded(obj: dict[str, Any], size: int) -> bytes:
    """``obj`` encoded with an extra unknown field (readers ignore unknown fields) so that the
    JSON is exactly ``size`` bytes long."""
    base = msgspec.json.encode({**obj, "_pad": ""})
    if len(base) > size:
        raise ValueError(f"{len(base)} bytes before padding, more than {size}")
    data = msgspec.json.encode({**obj, "_pad": "x" * (size - len(base))})
    assert len(data) == size
    return data


# --- service processes --------------------------------------------------------------------------


class Fleet:
    """Replicas of the services as child processes (``python -m services.<name>``)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.replicas: dict[str, list[ServiceProcess]] = {}

    def start(self, name: str, count: int = 1, **changes: Any) -> list[ServiceProcess]:
        started = []
        for _ in range(count):
            index = len(self.replicas.get(name, []))
            settings = self.settings.with_overrides(**changes) if changes else self.settings
            if name == "benchmarker":
                # One DuckDB history per benchmarker process (one writer per file).
                settings = settings.with_overrides(
                    history_path=str(Path(settings.home) / f"history-{index}.duckdb"),
                )
            process = ServiceProcess(name, settings, self.log_dir).start()
            self.replicas.setdefault(name, []).append(process)
            started.append(process)
        return started

    def kill(self, name: str, index: int = 0) -> None:
        self.replicas[name][index].kill()

    def alive(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.replicas.get(name, []) if p.process is not None and p.process.poll() is None]

    def stop(self) -> None:
        for processes in self.replicas.values():
            for process in processes:
                process.stop(timeout=15)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}[{i}] ---\n{p.log()[-3000:]}"
            for name, processes in self.replicas.items()
            for i, p in enumerate(processes)
        )

    async def wait_healthy(self, client: Client, timeout: float = 60.0) -> None:
        """Until every live replica answers on the micro discovery API."""

        async def all_up() -> bool:
            found = await client.status(timeout=0.3)
            counts: dict[str, int] = {}
            for status in found:
                counts[status.name] = counts.get(status.name, 0) + 1
            return all(counts.get(name, 0) >= len(self.alive(name)) for name in self.replicas)

        await eventually(all_up, timeout=timeout, what="every service replica answering")
