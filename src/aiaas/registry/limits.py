"""The one place the registry's limits are built, from the settings (``RegistrySettings``)."""

from __future__ import annotations

from aiaas.sandbox import ChildLimits
from aiaas.settings import Settings

ONNX_CHECK_OUTPUT_BYTES = 4 * 1024 * 1024  # one reply line: a graph's inputs and outputs
ONNX_CHECK_OPEN_FILES = 256
CPU_GRACE_S = 5  # CPU seconds beyond the wall-clock limit (the process is single-threaded)
QUANTIZE_OUTPUT_BYTES = 1024 * 1024  # one reply line of numbers (and ORT's warnings)
QUANTIZE_OPEN_FILES = 256
#: Room beyond the source graph's size for a file the quantizing process writes: the
#: quantizer saves the source (and its shape-inferred copy) to its temporary folder.
QUANTIZE_FILE_MARGIN = 64 * 1024 * 1024


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


def quantize_limits(settings: Settings, source_bytes: int) -> ChildLimits:
    """The sandbox of the process that quantizes a graph of ``source_bytes`` and measures
    both graphs: it writes files no larger than the source (plus a margin) into its work
    directory, single-threaded (ONNX Runtime sessions of one thread)."""
    r = settings.registry
    return ChildLimits(
        timeout_s=r.quantize_timeout_s,
        cpu_s=int(r.quantize_timeout_s) + CPU_GRACE_S,
        address_bytes=r.quantize_address_space_bytes,
        max_file_bytes=max(source_bytes, r.max_onnx_bytes) + QUANTIZE_FILE_MARGIN,
        max_output_bytes=QUANTIZE_OUTPUT_BYTES,
        open_files=QUANTIZE_OPEN_FILES,
    )


def quantize_reference_rows(settings: Settings) -> int:
    """The most rows of the reference dataset a quantization is measured on."""
    return settings.registry.quantize_reference_rows
