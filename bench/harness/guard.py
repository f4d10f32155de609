"""Process hygiene for the runner and its workers: signals become a clean stop, workers die with their parent,
a results folder (and each run folder) is used by one process at a time, and an OOM kill is told from other kills."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bench.core.errors import UsageError

PARENT_ENV = "BENCH_PARENT_PID"
"""The PID of the process that launched a worker; the worker stops when it is gone."""
LOCK = ".lock"
INTERRUPT_EXIT = 130
"""Exit code of a run stopped by SIGINT or SIGTERM (the shell's code for Ctrl-C)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop cleanly (not an ``Exception``, so a method's ``except Exception`` cannot eat
    it; a ``KeyboardInterrupt``, so a command stopped anywhere else ends in one line, exit 130)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def raise_on_signals() -> None:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread (once; the stop itself is not interrupted)."""

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def die_with_parent() -> None:
    """In a worker: get SIGTERM when the launching process dies (Linux ``PR_SET_PDEATHSIG``), and, for workers under
    a launcher such as ``torch.distributed.run``, stop when the PID in ``BENCH_PARENT_PID`` is gone."""
    expected = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not expected:
        return
    pid = int(expected)
    if not alive(pid):  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch():
        while alive(pid):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def lock_folder(folder: Path, what: str, wait_s: float = 0.0):
    """Hold an exclusive lock on ``folder/.lock`` (holding this PID) for the life of the returned file; another
    holder is a ``UsageError`` naming its PID (after waiting up to ``wait_s`` seconds)."""
    path = Path(folder) / LOCK
    f = open(path, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise UsageError(f"{str(folder)!r} is in use by another {what} (PID {holder}); wait for it to end "
                                 f"or stop it (kill {holder}), then try again") from None
            time.sleep(0.2)
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def oom_kills() -> int | None:
    """The kernel OOM killer's kill count in this process's memory cgroup (v2 or v1), or None when unknown."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


class SafeStream:
    """A worker's stderr: writes that fail (the parent reading it is gone) are dropped instead of raising."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self.stream, name)


ERROR_RESERVE = ".error.log.reserve"
RESERVE_BYTES = 64 * 1024
"""Space set aside when a worker starts, so a full disk still gets its traceback into ``error.log``."""


def reserve_error_log(run_dir: Path) -> None:
    """Best effort: allocate ``ERROR_RESERVE`` (``keep_error_log`` overwrites it in place: no new space needed)."""
    path = run_dir / ERROR_RESERVE
    try:
        if not path.is_file() or path.stat().st_size < RESERVE_BYTES:
            with open(path, "wb") as f:
                f.write(b"\n" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        pass


def release_error_log(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (run_dir / ERROR_RESERVE).unlink(missing_ok=True)


def keep_error_log(run_dir: Path, text: str) -> None:
    """Best effort: the traceback into ``error.log``, written into the reserved space where there is one (a full
    disk has no room for a new file); must never replace the original error with a disk-full one."""
    data = text.encode()[-RESERVE_BYTES:]
    reserve = run_dir / ERROR_RESERVE
    try:
        if reserve.is_file():
            with open(reserve, "r+b") as f:
                f.write(data)
                f.truncate(len(data))
            os.replace(reserve, run_dir / "error.log")
        else:
            (run_dir / "error.log").write_text(text)
    except OSError:
        pass
