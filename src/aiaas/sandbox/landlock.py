"""Landlock (Linux ≥ 5.13): let a process give up the filesystem beyond a few paths.

Applied by every sandboxed child (:mod:`aiaas.sandbox.child`) before it touches untrusted
input; the ingest process, for example, keeps read access to the Python
installation and system libraries, read-write access to its scratch directory, and nothing
else — not the artifact store of any organization, not ``/proc`` of the API process (whose
environment holds secrets), no TCP (ABI ≥ 4), no signals or abstract sockets outside itself
(ABI ≥ 6). Unprivileged and irreversible; inherited by any child.

Best effort by design: on a kernel without Landlock :func:`restrict` returns 0 and the
process runs with the rlimits only (the caller logs it). Raw syscalls through ctypes: the
standard library has no binding and the rules are a few structs.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

_SYSCALLS = {  # landlock_create_ruleset, landlock_add_rule, landlock_restrict_self
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# filesystem access rights (uapi/linux/landlock.h)
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
_ABI1_ALL = (1 << 13) - 1
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
READ = EXECUTE | READ_FILE | READ_DIR


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when it has none (or this is not Linux)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or platform.system() != "Linux":
        return 0
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def _fs_rights(abi: int) -> int:
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(
    read_only: Iterable[str | Path], read_write: Iterable[str | Path], *, tcp: bool = False
) -> int:
    """Allow only these paths (and what lies beneath them), and no TCP unless ``tcp``;
    returns the ABI used, 0 if none.

    Paths that do not exist are skipped. Raises OSError if the kernel has Landlock but
    refuses the ruleset — a sandbox that silently did not apply would be worse.
    """
    abi = abi_version()
    if abi == 0:
        return 0
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    libc = _libc()
    fs = _fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=fs,
        handled_access_net=3 if abi >= 4 and not tcp else 0,  # bind and connect TCP: none
        scoped=3 if abi >= 6 else 0,  # abstract unix sockets and signals: own domain only
    )
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for paths, access in ((read_only, READ), (read_write, fs)):
            for path in paths:
                _allow(libc, add_rule, ruleset, Path(path), access, fs)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(restrict_self, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def runtime_paths() -> list[str]:
    """What a confined Python + DuckDB + pyarrow process must still read."""
    import aiaas

    return sorted(
        {
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            os.path.dirname(aiaas.__file__),  # an editable install lives outside sys.prefix
            "/usr",
            "/lib",
            "/lib64",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/dev/urandom",
            "/proc/self",  # this process only: never the API process's environment
            "/proc/meminfo",
            "/proc/cpuinfo",
            "/sys/devices/system/cpu",
            "/sys/fs/cgroup",
        }
    )


def _allow(
    libc: ctypes.CDLL, add_rule: int, ruleset: int, path: Path, access: int, fs: int
) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    try:
        if not path.is_dir():  # a file may only carry the rights that apply to files
            access &= EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
        beneath = _PathBeneathAttr(allowed_access=access & fs, parent_fd=fd)
        if libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(beneath), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)
