"""The conversion profiles, each a small module behind one interface (``base.Profile``), and
the registry that names them.

``opset-N`` is parametric: any ``opset-<N>`` id resolves to an upgrade (or downgrade) to N.
"""

from __future__ import annotations

from services.converter.errors import UnknownProfile
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    Runner,
)
from services.converter.profiles.fp16 import Float16
from services.converter.profiles.opset import PATTERN as OPSET_PATTERN
from services.converter.profiles.opset import OpsetConvert, latest_opset
from services.converter.profiles.ort_opt import OrtOptimize
from services.converter.profiles.quantize import Int8Dynamic, Int8Static
from services.converter.profiles.tensorrt import TensorRTEngine

_FIXED: dict[str, Profile] = {
    p.id: p
    for p in (
        OrtOptimize(),
        Float16(),
        Int8Dynamic(),
        Int8Static(),
        TensorRTEngine("fp16"),
        TensorRTEngine("int8"),
    )
}


def get_profile(profile_id: str) -> Profile:
    if profile_id in _FIXED:
        return _FIXED[profile_id]
    match = OPSET_PATTERN.match(profile_id)
    if match:
        profile = OpsetConvert(int(match.group(1)))
        profile.check_target()
        return profile
    raise UnknownProfile(
        f"unknown profile {profile_id!r}; profiles: {', '.join([*_FIXED, 'opset-<N>'])} (see `inferlab profiles`)"
    )


def all_profiles() -> list[Profile]:
    """Every fixed profile plus ``opset-<latest>`` as the representative of ``opset-N``."""
    return [*_FIXED.values(), OpsetConvert(latest_opset())]


__all__ = [
    "ConversionContext",
    "Converted",
    "Profile",
    "Runner",
    "all_profiles",
    "get_profile",
]
