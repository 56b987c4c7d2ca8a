"""The guarded step: an untrusted model's first load and run, in a confined child process.

A TorchScript file runs its own code while loading, and any model's first run may allocate
without bound or loop. :func:`run_guarded` hands the file's bytes to ``python -m
explorer.guard`` on its standard input. The child is started with limits on memory, CPU time
and file size, confines itself (:func:`explorer.sandbox.confine`: no file writes, no programs,
no network) before it reads a byte, converts the model into a plain ``torch.export`` program
(dynamic batch, checked against the original on random inputs), and writes that program back
on its standard output as a ``.pt2`` archive. The parent reads at most a bounded number of
bytes within a deadline, and then treats the archive like any other upload: vetted member by
member (:mod:`explorer.vetting`), never unpickled. A child that fails, times out, runs out of
memory or writes garbage becomes one :class:`~explorer.errors.ModelError`.

Protocol: stdin = one JSON line ``{"kind", "name", "input_shape"}`` then the file's bytes;
stdout = one JSON line ``{"ok": true, "input_shape": [...]}`` then the archive, or
``{"ok": false, "message": "..."}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from explorer.errors import ModelError
from explorer.limits import (
    GUARDED_LOAD_MEMORY_BYTES,
    GUARDED_LOAD_SECONDS,
    MAX_MODEL_FILE_BYTES,
)

MAX_REPLY_BYTES = 2 * MAX_MODEL_FILE_BYTES + (1 << 20)
MAX_MESSAGE_CHARS = 600
KEPT_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_guarded(
    kind: str,
    data: bytes,
    name: str,
    input_shape: tuple[int, ...] | None,
    seconds: float = GUARDED_LOAD_SECONDS,
    memory_bytes: int = GUARDED_LOAD_MEMORY_BYTES,
) -> tuple[bytes, tuple[int, ...]]:
    """Convert the model file ``data`` (``kind`` 'torchscript' or 'export') in a confined
    child; returns the plain program's ``.pt2`` bytes and one sample's input shape."""
    header = json.dumps({"kind": kind, "name": name,
                         "input_shape": list(input_shape) if input_shape else None})
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory(prefix="pruning-explorer-guard-") as scratch:
        env.update(TMPDIR=scratch, HOME=scratch)
        return _run(header.encode() + b"\n" + data, env, name, seconds, memory_bytes)


def _run(
    payload: bytes, env: dict[str, str], name: str, seconds: float, memory_bytes: int
) -> tuple[bytes, tuple[int, ...]]:
    from explorer.sandbox import limit_resources

    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.guard"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd="/", env=env, start_new_session=True,
        preexec_fn=lambda: limit_resources(memory_bytes, int(seconds) + 1),
    )
    reply = bytearray()
    reader = threading.Thread(target=_read_capped, args=(proc, reply), daemon=True)
    reader.start()
    writer = threading.Thread(target=_feed, args=(proc, payload), daemon=True)
    writer.start()
    started = time.monotonic()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise ModelError(
            f"{name}: loading and running the model did not finish within {seconds:.0f} s "
            "(in the guarded process untrusted models run in); it was stopped. A model "
            "that loops or is far too large for this machine cannot be explored here."
        ) from None
    finally:
        reader.join(timeout=5)
    return _parse_reply(bytes(reply), proc.returncode, name, time.monotonic() - started,
                        memory_bytes)


def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    with contextlib.suppress(OSError):  # the child may end before it reads everything
        proc.stdin.write(payload)
        proc.stdin.close()


def _read_capped(proc: subprocess.Popen, reply: bytearray) -> None:
    while chunk := proc.stdout.read(1 << 20):
        reply.extend(chunk)
        if len(reply) > MAX_REPLY_BYTES:
            _kill(proc)
            return


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _parse_reply(
    reply: bytes, returncode: int, name: str, seconds: float, memory_bytes: int
) -> tuple[bytes, tuple[int, ...]]:
    line, _, archive = reply.partition(b"\n")
    try:
        status = json.loads(line) if line else None
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("ok") is False:
        message = str(status.get("message", ""))[:MAX_MESSAGE_CHARS]
        raise ModelError(message or f"{name}: the model could not be loaded.")
    shape = status.get("input_shape") if isinstance(status, dict) else None
    if (returncode == 0 and status.get("ok") is True and isinstance(shape, list)
            and all(isinstance(d, int) and d > 0 for d in shape) and archive):
        return archive, tuple(shape)
    if returncode in (-signal.SIGKILL, -signal.SIGXCPU) or returncode == -signal.SIGSEGV:
        why = "used more CPU time or memory than allowed"
    elif len(reply) > MAX_REPLY_BYTES:
        why = "produced far more output than a model can"
    else:
        why = f"stopped unexpectedly (exit status {returncode})"
    raise ModelError(
        f"{name}: loading and running the model in the guarded process failed: it {why} "
        f"(limits: {memory_bytes / 2**30:.0f} GiB of memory, {GUARDED_LOAD_SECONDS} s). "
        "The file is not loaded."
    )


def _child() -> int:
    """The child's side: confine, read the request, convert, reply."""
    from explorer.sandbox import confine

    confine(os.environ.get("TMPDIR"))  # before a byte of the untrusted file is read
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the model prints stays off the reply channel
    request = json.loads(sys.stdin.buffer.readline())
    data = sys.stdin.buffer.read(MAX_MODEL_FILE_BYTES + 1)
    name = str(request["name"])
    try:
        archive, shape = convert(request["kind"], data, name, request["input_shape"])
    except ModelError as exc:
        out.write(json.dumps({"ok": False, "message": str(exc)}).encode() + b"\n")
        return 0
    except MemoryError:
        out.write(json.dumps({"ok": False, "message": (
            f"{name}: the model needs more memory than the "
            f"{GUARDED_LOAD_MEMORY_BYTES / 2**30:.0f} GiB allowed for a first run; "
            "it is not loaded.")}).encode() + b"\n")
        return 0
    except Exception as exc:  # whatever the model's code raised
        text = str(exc).strip().splitlines()
        gist = text[0][:300] if text else type(exc).__name__
        out.write(json.dumps({"ok": False, "message": (
            f"{name}: the model could not be loaded ({gist}).")}).encode() + b"\n")
        return 0
    out.write(json.dumps({"ok": True, "input_shape": list(shape)}).encode() + b"\n")
    out.write(archive)
    out.flush()
    return 0


def convert(
    kind: str, data: bytes, name: str, input_shape: list[int] | None
) -> tuple[bytes, tuple[int, ...]]:
    """The model file as a plain ``torch.export`` program's ``.pt2`` bytes (runs the model)."""
    import torch

    from explorer.bundle import export_program
    from explorer.io import exported_module, torchscript_module

    shape = tuple(input_shape) if input_shape else None
    load = torchscript_module if kind == "torchscript" else exported_module
    module, sample_shape = load(data, name, shape)
    try:
        program = export_program(module, torch.zeros((2, *sample_shape)))
    except Exception as exc:  # export raises many internal types
        raise ModelError(f"{name}: the model cannot be exported for analysis ({exc}).") from None
    program._guards_code = []  # guards are Python source; they are never run here
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue(), tuple(int(d) for d in sample_shape)


if __name__ == "__main__":
    sys.exit(_child())
