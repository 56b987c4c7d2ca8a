"""Confinement for the process that first runs an untrusted model: no writes, no network.

A TorchScript file is a program, and its code runs while it loads; any model's first run may
allocate without bound or never end. :mod:`explorer.load.guard` therefore runs that step in a
child process, which calls :func:`confine` before it reads the file: a Landlock ruleset
(Linux 5.13+, no privileges needed) that forbids creating, writing, truncating, renaming or
removing any file outside a private scratch folder (torch's tracing wants a temporary
directory), executing programs and opening TCP connections, for the rest of the process's
life. Resource limits (:func:`limit_resources`, set before the child starts) bound
its memory, CPU time and file sizes; the parent adds a wall-clock deadline.

Where Landlock is missing (an older kernel, another OS), :func:`confine` returns 0 and
restricts nothing; the guard then refuses TorchScript (a program) and still runs ``.pt2``
programs, whose operations are allow-listed.
"""

from __future__ import annotations

import ctypes
import os
import resource

# Linux UAPI (include/uapi/linux/landlock.h); syscall numbers are the same on every arch.
CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
RULE_PATH_BENEATH = 1
CREATE_RULESET_VERSION = 1
PR_SET_NO_NEW_PRIVS = 38
FS_EXECUTE, FS_WRITE_FILE = 1 << 0, 1 << 1
FS_REMOVE_DIR, FS_REMOVE_FILE = 1 << 4, 1 << 5
FS_MAKE = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
FS_REFER, FS_TRUNCATE = 1 << 13, 1 << 14
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
SCRATCH_FILE_BYTES = 16 << 20  # the largest file the child may write into its scratch folder


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(int(version), 0)


def confine(scratch: str | None = None) -> int:
    """Forbid this process every file write, program execution and TCP connection, from
    now on, except writing inside the folder ``scratch`` (a private temporary folder);
    returns the Landlock ABI used (0: not available, nothing was restricted)."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    fs = FS_EXECUTE | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ruleset = libc.syscall(CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if scratch is not None:
            _allow_beneath(libc, ruleset, scratch, fs & ~FS_EXECUTE)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def _allow_beneath(libc: ctypes.CDLL, ruleset: int, folder: str, access: int) -> None:
    fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    try:
        rule = _PathBeneath(access, fd)
        if libc.syscall(ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_add_rule failed")
    finally:
        os.close(fd)


def limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    """Bound this process (and what it starts): address space, CPU time, file size."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (SCRATCH_FILE_BYTES, SCRATCH_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
