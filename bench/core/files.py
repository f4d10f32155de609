"""Atomic files and folders: a reader never sees a half-written result, and a failed write leaves the old one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.core.errors import UsageError


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: give results the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 8 * 2**20
"""Below this much free space, a writer's failure without an errno (torch's) is taken for a full disk."""


WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos")
"""Texts of torch's serialisation errors when a write fails (they carry no errno)."""


def free_bytes(path: Path) -> int | None:
    """Bytes this process may still write on ``path``'s file system (root may use the reserved blocks)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


class NoSpaceError(OSError):
    """A write that met a full disk, its message already the cause ("no space left on PATH ...")."""

    def __str__(self) -> str:
        return str(self.strerror)


def storage_cause(exc: BaseException, path: Path) -> str | None:
    """"no space left on PATH (...)" for a write that failed on a full disk: an ``OSError`` ENOSPC / EDQUOT, or
    torch's writer failing (its RuntimeError names no errno) while under ``LOW_SPACE_BYTES`` are free; None for any
    other error."""
    if isinstance(exc, NoSpaceError):
        return str(exc)
    first = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return f"no space left on {exc.filename or path} ({first}); free space, then run again with --resume"
    writer = isinstance(exc, RuntimeError) and any(m in str(exc) for m in WRITER_FAILURES)
    free = free_bytes(path) if writer else None
    if free is not None and free < LOW_SPACE_BYTES:
        return f"no space left on {path} ({free // 1024} KiB free; {first}); free space, then run again with --resume"
    return None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: Path, fix: str):
    """The JSON in ``path``; a damaged or non-text file is a ``UsageError`` naming the file and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{str(path)!r} is not valid JSON ({exc.msg}); {fix}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{str(path)!r} is not a text file; {fix}") from None


def check_replaceable(out: Path, marker: str, inputs=()) -> None:
    """Refuse an ``out`` that would destroy something else when replaced: an input folder, a folder holding one, or
    an existing non-empty folder (or file) that is not an earlier output (it lacks ``marker``)."""
    out = Path(out).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or out in src.parents:
            raise UsageError(f"--out {str(out)!r} is or holds the input {str(src)!r}; it would be replaced: choose "
                             "another folder (the default is DIR/report)")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / marker).is_file()):
        raise UsageError(f"--out {str(out)!r} exists and is not an earlier output (no {marker}); it would be "
                         "replaced whole: choose a new folder")


@contextlib.contextmanager
def atomic_dir(out: Path, marker: str, inputs=()):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` whole, on error it is removed.
    ``out`` must be new, empty or an earlier output holding ``marker`` (see ``check_replaceable``)."""
    check_replaceable(out, marker, inputs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: give the report the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
