"""The one place the registry's limits are built, from the settings (``RegistrySettings``)."""

from __future__ import annotations

from aiaas.sandbox import ChildLimits
from aiaas.settings import Settings

ONNX_CHECK_OUTPUT_BYTES = 4 * 1024 * 1024  # one reply line: a graph's inputs and outputs
ONNX_CHECK_OPEN_FILES = 256
CPU_GRACE_S = 5  # CPU seconds beyond the wall-clock limit (the process is single-threaded)


def max_onnx_bytes(settings: Settings) -> int:
    """The largest ONNX file one upload may carry (413 above)."""
    return settings.registry.max_onnx_bytes


def onnx_check_limits(settings: Settings) -> ChildLimits:
    """The sandbox of the process that loads, checks and runs an uploaded ONNX file: it
    writes no file at all (``max_file_bytes=0``)."""
    r = settings.registry
    return ChildLimits(
        timeout_s=r.onnx_check_timeout_s,
        cpu_s=int(r.onnx_check_timeout_s) + CPU_GRACE_S,
        address_bytes=r.onnx_check_address_space_bytes,
        max_file_bytes=0,
        max_output_bytes=ONNX_CHECK_OUTPUT_BYTES,
        open_files=ONNX_CHECK_OPEN_FILES,
    )
