"""Run-time detection of an NVIDIA GPU and of the GPU-capable libraries. Never imported
eagerly by the CPU paths: each probe is cheap and cached."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache


@cache
def nvidia_smi() -> dict[str, str] | None:
    """Name and driver of the first GPU, or None when there is none (or no driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = (
            subprocess.run(
                [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, driver = out[0].partition(",")
    return {"name": name.strip(), "driver": driver.strip()}


def gpu_available() -> bool:
    return nvidia_smi() is not None


@cache
def ort_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


@cache
def tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return None
    import tensorrt as trt

    return str(trt.__version__)
