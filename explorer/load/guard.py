"""The guarded step: an untrusted model's first load and run, in a confined child process.

A TorchScript file runs its own code while loading, and any model's first run may allocate
without bound or loop. So :func:`run_guarded` never loads one in this process. It hands the
file's bytes to a small server process (``python -m explorer.load.guard``, started once and kept:
it has imported torch, so each load saves the seconds that import takes), which forks one
child per file. The child limits its memory, CPU time and file sizes, confines itself
(:func:`explorer.load.sandbox.confine`: no file writes outside a private scratch folder, no
programs, no network) before it reads a byte of the file, converts the model into a plain
``torch.export`` program (dynamic batch, checked against the original on random inputs) and
writes that program back as a ``.pt2`` archive. The server reads at most a bounded number of
bytes within a deadline and kills a child that overruns. This process then treats the archive
like any other upload: vetted member by member (:mod:`explorer.load.vetting`), never unpickled.
A child that fails, times out, runs out of memory or writes garbage becomes one
:class:`~explorer.errors.ModelError`.

Protocol, both directions length-prefixed (8 bytes, big-endian): a request is one JSON line
``{"kind", "name", "input_shape", "seconds", "memory_bytes"}`` then the file's bytes; a reply
is the child's exit status (4 bytes, signed, or :data:`TIMED_OUT`, :data:`TOO_LONG`) then what
the child wrote: one JSON line ``{"ok": true, "input_shape": [...]}`` and the archive, or
``{"ok": false, "message": "..."}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
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
SERVER_START_SECONDS = 120  # importing torch on a busy two-core machine
TIMED_OUT, TOO_LONG, SERVER_LOST = -1000, -1001, -1002
MAX_FD = 65536
KEPT_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_lock = threading.Lock()
_server: subprocess.Popen | None = None


def run_guarded(
    kind: str,
    data: bytes,
    name: str,
    input_shape: tuple[int, ...] | None,
    seconds: float = GUARDED_LOAD_SECONDS,
    memory_bytes: int = GUARDED_LOAD_MEMORY_BYTES,
) -> tuple[bytes, tuple[int, ...]]:
    """Convert the model file ``data`` (``kind`` 'torchscript' or 'export') in a confined
    child; returns the plain program's ``.pt2`` bytes and one sample's input shape.

    Loads are served one at a time (the machine has few cores; a load takes seconds)."""
    request = json.dumps({"kind": kind, "name": name, "seconds": seconds,
                          "memory_bytes": memory_bytes,
                          "input_shape": list(input_shape) if input_shape else None})
    payload = request.encode() + b"\n" + data
    with _lock:
        status, reply = _ask(payload, seconds)
    return _parse_reply(reply, status, name, seconds, memory_bytes)


def _ask(payload: bytes, seconds: float) -> tuple[int, bytes]:
    """Send one request to the server (started if needed) and wait for its reply."""
    global _server
    if _server is None or _server.poll() is not None:
        _server = _start_server()
    server = _server
    try:
        server.stdin.write(len(payload).to_bytes(8, "big") + payload)
        server.stdin.flush()
        deadline = time.monotonic() + seconds + SERVER_START_SECONDS
        size = int.from_bytes(_read_exact(server.stdout.fileno(), 8, deadline), "big")
        status = int.from_bytes(_read_exact(server.stdout.fileno(), 4, deadline), "big",
                                signed=True)
        if size > MAX_REPLY_BYTES:
            raise OSError("reply too long")
        return status, _read_exact(server.stdout.fileno(), size, deadline)
    except (OSError, EOFError, ValueError, TimeoutError) as exc:  # died or hung: start afresh
        _stop(server)
        _server = None
        return (TIMED_OUT if isinstance(exc, TimeoutError) else SERVER_LOST), b""


def _start_server() -> subprocess.Popen:
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "explorer.load.guard"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/", env=env,
        start_new_session=True,
    )


def _stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _read_exact(fd: int, size: int, deadline: float, cap: int | None = None) -> bytes:
    """``size`` bytes from ``fd`` (or, with ``cap``, everything up to EOF, at most ``cap``);
    TimeoutError past ``deadline``, EOFError when the writer ends early."""
    out = bytearray()
    while len(out) < (size if cap is None else cap + 1):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(1 << 20, (size if cap is None else cap + 1) - len(out)))
        if not chunk:
            if cap is None:
                raise EOFError
            break
        out.extend(chunk)
    return bytes(out)


def _parse_reply(
    reply: bytes, status_code: int, name: str, seconds: float, memory_bytes: int
) -> tuple[bytes, tuple[int, ...]]:
    if status_code == TIMED_OUT:
        raise ModelError(
            f"{name}: loading and running the model did not finish within {seconds:.0f} s "
            "(in the guarded process untrusted models run in); it was stopped. A model "
            "that loops or is far too large for this machine cannot be explored here."
        )
    line, _, archive = reply.partition(b"\n")
    try:
        status = json.loads(line) if line else {}
    except ValueError:
        status = {}
    status = status if isinstance(status, dict) else {}
    if status.get("ok") is False:
        message = str(status.get("message", ""))[:MAX_MESSAGE_CHARS]
        raise ModelError(message or f"{name}: the model could not be loaded.")
    shape = status.get("input_shape")
    if (status_code == 0 and status.get("ok") is True and isinstance(shape, list)
            and all(isinstance(d, int) and d > 0 for d in shape) and archive):
        return archive, tuple(shape)
    if status_code in (-signal.SIGKILL, -signal.SIGXCPU, -signal.SIGSEGV, -signal.SIGABRT):
        why = "used more CPU time or memory than allowed"
    elif status_code == TOO_LONG:
        why = "produced far more output than a model can"
    elif status_code == SERVER_LOST:
        why = "ended unexpectedly (it is started afresh for the next file)"
    else:
        why = f"stopped unexpectedly (exit status {status_code})"
    raise ModelError(
        f"{name}: loading and running the model in the guarded process failed: it {why} "
        f"(limits: {memory_bytes / 2**30:.0f} GiB of memory, {seconds:.0f} s). "
        "The file is not loaded."
    )


# --------------------------------------------------------------------------- the server side


def _serve() -> int:
    """The server: warm imports, then one forked child per request, until stdin closes."""
    import torch  # noqa: F401  (what every child needs, imported once)

    import explorer.load.convert  # noqa: F401

    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints never reach the replies
    while header := requests.read(8):
        payload = requests.read(int.from_bytes(header, "big"))
        status, reply = _fork_child(payload)
        replies.write(len(reply).to_bytes(8, "big") + status.to_bytes(4, "big", signed=True))
        replies.write(reply)
        replies.flush()
    return 0


def _fork_child(payload: bytes) -> tuple[int, bytes]:
    line, _, data = payload.partition(b"\n")
    request = json.loads(line)
    seconds, memory_bytes = float(request["seconds"]), int(request["memory_bytes"])
    scratch = tempfile.mkdtemp(prefix="pruning-explorer-guard-")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(request, data, write_end, scratch, seconds, memory_bytes)
    os.close(write_end)
    status = None
    try:
        reply = _read_exact(read_end, 0, time.monotonic() + seconds, cap=MAX_REPLY_BYTES)
        if len(reply) > MAX_REPLY_BYTES:
            status, reply = TOO_LONG, b""
    except TimeoutError:
        status, reply = TIMED_OUT, b""
    finally:
        os.close(read_end)
        if status is not None:
            os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
        shutil.rmtree(scratch, ignore_errors=True)
    return (os.waitstatus_to_exitcode(wait_status) if status is None else status), reply


def _child(request: dict, data: bytes, out_fd: int, scratch: str, seconds: float,
           memory_bytes: int) -> None:
    """Limit, confine, convert, reply on ``out_fd``, exit."""
    try:
        from explorer.load.sandbox import confine, limit_resources

        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # no way to the other requests or the replies but ``out_fd``
            os.dup2(null, fd)
        os.closerange(3, out_fd)
        os.closerange(out_fd + 1, MAX_FD)
        limit_resources(memory_bytes, int(seconds) + 1)
        os.environ["TMPDIR"] = tempfile.tempdir = scratch
        confined = confine(scratch) > 0  # before the untrusted bytes are parsed
        reply = _convert_reply(request, data, confined)
        with os.fdopen(out_fd, "wb") as out:
            out.write(reply)
    finally:
        os._exit(0)


def _convert_reply(request: dict, data: bytes, confined: bool) -> bytes:
    name = str(request["name"])
    try:
        if request["kind"] == "torchscript" and not confined:
            raise ModelError(
                f"{name} is TorchScript, a program that runs while it loads, and this machine "
                "cannot confine it (Linux Landlock is not available), so it is not loaded. "
                "Save the model as a torch.export program (.pt2) instead: those are checked "
                "operation by operation and never run code of their own."
            )
        archive, shape = convert(request["kind"], data, name, request["input_shape"])
    except ModelError as exc:
        message = str(exc)
    except MemoryError:
        message = (f"{name}: the model needs more memory than the "
                   f"{int(request['memory_bytes']) / 2**30:.0f} GiB allowed for a first run; "
                   "it is not loaded.")
    except Exception as exc:  # whatever the model's code raised
        text = str(exc).strip().splitlines()
        gist = text[0][:300] if text else type(exc).__name__
        message = f"{name}: the model could not be loaded ({gist})."
    else:
        return json.dumps({"ok": True, "input_shape": list(shape)}).encode() + b"\n" + archive
    return json.dumps({"ok": False, "message": message}).encode() + b"\n"


def convert(
    kind: str, data: bytes, name: str, input_shape: list[int] | None
) -> tuple[bytes, tuple[int, ...]]:
    """The model file as a plain ``torch.export`` program's ``.pt2`` bytes (runs the model)."""
    import torch

    from explorer.bundle import export_program
    from explorer.load.convert import exported_module, torchscript_module

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
    sys.exit(_serve())
