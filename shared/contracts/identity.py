"""Model identity: names, versions, variants, aliases, and the printed reference syntax.

A reference reads ``name@version`` or ``name@version+variant``; ``name@alias`` (and
``name@alias+variant``) is resolved by the registry; a bare ``name`` means its newest version.
Versions are semantic versions *without* build metadata, because ``+`` introduces the variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import InvalidReference

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
# semver.org's core and pre-release grammar; build metadata is deliberately excluded.
VERSION_PATTERN = (
    r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-(?:(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
)
VARIANT_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
ALIAS_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
BASE_VARIANT = "base"

# Whole-string matches (``fullmatch``: ``$`` would also accept a trailing newline, which then
# breaks KV keys and subjects downstream), and a bound checked before any regex runs.
MAX_VERSION_LENGTH = 128
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
_VARIANT = re.compile(VARIANT_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)
_REF = re.compile(r"^(?P<name>[^@+]+)(?:@(?P<target>[^+]+))?(?:\+(?P<variant>.+))?$")


def is_valid_name(name: str) -> bool:
    return isinstance(name, str) and len(name) <= 64 and _NAME.fullmatch(name) is not None


def is_valid_version(version: str) -> bool:
    return isinstance(version, str) and len(version) <= MAX_VERSION_LENGTH and _VERSION.fullmatch(version) is not None


def is_valid_variant(variant: str) -> bool:
    return isinstance(variant, str) and len(variant) <= 64 and _VARIANT.fullmatch(variant) is not None


def is_valid_alias(alias: str) -> bool:
    return isinstance(alias, str) and len(alias) <= 64 and _ALIAS.fullmatch(alias) is not None


# (major, minor, patch, 1 for a release / 0 for a pre-release, the pre-release's identifiers)
VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> VersionKey:
    """Sort key with semver precedence: a pre-release sorts before its release."""
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    if not pre:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference. Exactly one of ``version`` and ``alias`` may be set; neither
    means "newest version"."""

    name: str
    version: str | None = None
    alias: str | None = None
    variant: str = BASE_VARIANT

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if not match:
            raise InvalidReference(text, "expected NAME, NAME@VERSION, NAME@ALIAS or NAME@VERSION+VARIANT")
        name, target, variant = match["name"], match["target"], match["variant"] or BASE_VARIANT
        if not is_valid_name(name):
            raise InvalidReference(text, f"model name {name!r} must match {NAME_PATTERN}")
        if not is_valid_variant(variant):
            raise InvalidReference(text, f"variant {variant!r} must match {VARIANT_PATTERN}")
        if target is None:
            return cls(name=name, variant=variant)
        if is_valid_version(target):
            return cls(name=name, version=target, variant=variant)
        if is_valid_alias(target):
            return cls(name=name, alias=target, variant=variant)
        raise InvalidReference(text, f"{target!r} is neither a semantic version (1.2.0) nor an alias name")

    def with_variant(self, variant: str) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, alias=self.alias, variant=variant)

    def __str__(self) -> str:
        target = self.version or self.alias
        text = self.name if target is None else f"{self.name}@{target}"
        return text if self.variant == BASE_VARIANT else f"{text}+{self.variant}"


def format_ref(name: str, version: str, variant: str = BASE_VARIANT) -> str:
    return str(ModelRef(name=name, version=version, variant=variant))
