"""Requirements: parsing ``metric op value`` texts, the metrics they may name, policy files,
and the precedence that decides which requirement applies.

Syntax: ``accuracy>=0.95``, ``p99_ms <= 5``, ``accuracy>=95%`` (a percentage of 1),
``memory_mb<=512``; operators ``>= <= > < ==``. Metric names are listed in ``METRICS`` (with
a few aliases such as ``p99`` or ``fairness_gap``).

Precedence, per metric (the first source that names a metric decides it):
1. the request (``model.validate`` requirements, ``--require``);
2. the model's registration metadata, ``metadata["requirements"]`` (a variant registered
   without any inherits its parent's: ``parent-metadata``);
3. the per-name policy file ``<policy dir>/<name>.json`` (or ``.toml``);
4. the fleet-wide policy file ``<policy dir>/default.json`` (or ``.toml``);
5. built-in defaults: the structural check passes; a variant keeps parity with its parent; no
   significant fairness disparity when the dataset has groups. Defaults apply only where
   they can be measured.

A policy file holds ``requirements`` (a list of texts or ``{metric, op, value}`` objects, or a
``{metric: "op value"}`` table), and optionally ``checks`` and ``options`` used when the
request gives none.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.validator.errors import PolicyError
from shared.contracts.identity import is_valid_name
from shared.contracts.validation import (
    METRIC_ALIASES,
    METRICS,
    OPS,
    Requirement,
    RequirementError,
    canonical_metric,
    parse_requirement,
)

SOURCES = ("request", "metadata", "parent-metadata", "policy", "default-policy", "default")
BUILTIN_DEFAULTS = (
    Requirement(metric="structural", op=">=", value=1.0),
    Requirement(metric="parity", op=">=", value=1.0),
    Requirement(metric="fairness", op=">=", value=1.0),
)

__all__ = [
    "BUILTIN_DEFAULTS",
    "METRICS",
    "METRIC_ALIASES",
    "Policy",
    "PolicyError",
    "RequirementError",
    "Sourced",
    "canonical_metric",
    "load_policy",
    "parse_requirement",
    "parse_requirements",
    "resolve",
]


def higher_is_better(metric: str) -> bool:
    return METRICS[metric][2] if metric in METRICS else True


def check_requirement(req: Requirement) -> Requirement:
    if req.op not in OPS:
        raise RequirementError(f"requirement on {req.metric!r}: operator {req.op!r} is not one of {' '.join(OPS)}")
    value = float(req.value)
    if value != value or value in (float("inf"), float("-inf")):
        raise RequirementError(f"requirement on {req.metric!r}: the limit must be a finite number")
    return Requirement(metric=canonical_metric(req.metric), op=req.op, value=value)


def parse_requirements(value: Any, where: str) -> list[Requirement]:
    """Requirements from any of the accepted shapes; ``where`` names the source in errors."""
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, dict):
        items = []
        for metric, rule in value.items():
            if isinstance(rule, str):
                items.append(f"{metric}{rule}" if rule.strip()[:1] in "<>=" else f"{metric}>={rule}")
            elif isinstance(rule, int | float):
                items.append(f"{metric}>={rule}" if higher_is_better(canonical_metric(metric)) else f"{metric}<={rule}")
            else:
                raise RequirementError(f"{where}: requirement for {metric!r} must be a text like '>=0.95' or a number")
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in re.split(r"[,;]", value) if part.strip()]
    else:
        raise RequirementError(f"{where}: requirements must be a list or a table, not {type(value).__name__}")
    out = []
    for item in items:
        try:
            if isinstance(item, Requirement):
                out.append(check_requirement(item))
            elif isinstance(item, str):
                out.append(parse_requirement(item))
            elif isinstance(item, dict) and {"metric", "op", "value"} <= set(item):
                out.append(
                    check_requirement(
                        Requirement(metric=str(item["metric"]), op=str(item["op"]), value=float(item["value"]))
                    )
                )
            else:
                raise RequirementError(f"cannot read {item!r}: use 'metric>=value' or {{metric, op, value}}")
        except (RequirementError, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, RequirementError) else str(exc)
            raise RequirementError(f"{where}: {message}") from None
    return out


@dataclass(frozen=True)
class Sourced:
    requirement: Requirement
    source: str


@dataclass
class Policy:
    path: Path
    requirements: list[Requirement] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def _read_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"policy file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {path}: expected an object with 'requirements', 'checks', 'options'")
    unknown = set(data) - {"requirements", "checks", "options", "description"}
    if unknown:
        raise PolicyError(f"policy file {path}: unknown keys {sorted(unknown)}")
    try:
        requirements = parse_requirements(data.get("requirements"), f"policy file {path}")
    except RequirementError as exc:
        raise PolicyError(exc.message) from None
    checks = data.get("checks", [])
    options = data.get("options", {})
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        raise PolicyError(f"policy file {path}: 'checks' must be a list of check names")
    if not isinstance(options, dict):
        raise PolicyError(f"policy file {path}: 'options' must be a table")
    return Policy(path=path, requirements=requirements, checks=checks, options=options)


def load_policy(folder: Path, name: str) -> Policy | None:
    """The policy file for ``name`` (``default`` for the fleet-wide one), JSON preferred over
    TOML when both exist; None when there is none."""
    if name != "default" and not is_valid_name(name):
        return None
    for suffix in (".json", ".toml"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return _read_policy(path)
    return None


def resolve(
    *,
    request: list[Requirement],
    metadata: Any,
    policy: Policy | None,
    default_policy: Policy | None,
    defaults: tuple[Requirement, ...] = BUILTIN_DEFAULTS,
    metadata_source: str = "metadata",
) -> list[Sourced]:
    """Merge the sources by precedence: per metric, the highest source wins (several
    requirements on one metric from that same source all apply, e.g. a range)."""
    layers = [
        ("request", [check_requirement(r) for r in request]),
        (metadata_source, parse_requirements(metadata, f"{metadata_source} 'requirements'")),
        ("policy", policy.requirements if policy else []),
        ("default-policy", default_policy.requirements if default_policy else []),
        ("default", list(defaults)),
    ]
    decided: dict[str, str] = {}
    out: list[Sourced] = []
    for source, reqs in layers:
        for req in reqs:
            owner = decided.setdefault(req.metric, source)
            if owner == source:
                out.append(Sourced(req, source))
    return out


def format_requirement(req: Requirement) -> str:
    return f"{req.metric}{req.op}{req.value:g}"
