"""Atomic files and folders: a reader never sees a half-written result, and a failed write leaves the old one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.core.errors import OutputError, UsageError


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


WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos", "basic_ios", "iostream error")
"""Texts of torch's serialisation errors when a write fails (they carry no errno; ``basic_ios::clear: iostream
error`` is its C++ stream's on a full tmpfs)."""

NO_SPACE_TEXTS = ("No space left on device", "StorageFull", "Disk quota exceeded")
"""Texts of a full disk in errors that carry no errno (safetensors' Rust writer)."""


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


def mount_of(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (its nearest existing ancestor's)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def storage_cause(exc: BaseException, path: Path, writing: bool = False) -> str | None:
    """"no space left on PATH: disk full (N bytes free on MOUNT; ...)" for a write that failed on a full disk: an
    ``OSError`` ENOSPC / EDQUOT, an error whose text says so, or, with no errno to tell, one raised by a writer
    (``writing``: any error of the layer that was writing, e.g. torch's C++ stream; else torch's known writer
    texts) while under ``LOW_SPACE_BYTES`` are free on ``path``'s file system; None for any other error."""
    if isinstance(exc, NoSpaceError):
        return str(exc)
    first = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    fix = "free space, then run again with --resume"
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return f"no space left on {exc.filename or path} ({first}); {fix}"
    said = any(m in str(exc) for m in NO_SPACE_TEXTS)
    writer = said or (isinstance(exc, Exception) and (writing or any(m in str(exc) for m in WRITER_FAILURES)))
    free = free_bytes(path) if writer else None
    if said or (free is not None and free < LOW_SPACE_BYTES):
        room = f"{free} bytes free" if free is not None else "free space unknown"
        return f"no space left on {path}: disk full ({room} on {mount_of(path)}; {first}); {fix}"
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


def read_json(path: Path, fix: str, shape=None, label: str | None = None):
    """The JSON in ``path``; a damaged, non-text or unreadable file, or (given ``shape``: see ``check_shape``) one
    holding a value of the wrong type, is a ``UsageError`` naming the file (``label``, default its path), the key
    and ``fix``."""
    label = label or repr(str(path))
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{label} is not valid JSON ({exc.msg}); {fix}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not a text file; {fix}") from None
    except OSError as exc:
        raise UsageError(f"{label} cannot be read ({exc.strerror or exc}); {fix}") from None
    check_shape(data, shape, label, fix)
    return data


NULL = type(None)
"""JSON null, in a shape."""
KINDS = {float: "a number", int: "an integer", str: "a string", bool: "true or false", dict: "an object",
         list: "a list", NULL: "null"}


def check_shape(value, shape, label: str, fix: str, key: str = "") -> None:
    """Refuse a JSON ``value`` unlike ``shape`` with one line naming ``label`` (the file), the key, what was expected
    and what was found, and ``fix``. A shape is ``None`` (anything), a type (``float``: any number; ``int``: an
    integer; a boolean is neither), ``[shape]`` (a list of such), ``{"*": shape}`` (an object of such),
    ``{key: shape}`` (an object with these keys; ``"key?"``: may be missing) or a tuple of shapes (any one)."""
    options = shape if isinstance(shape, tuple) else (shape,)
    chosen = next((s for s in options if s is None or _is(value, list if isinstance(s, list) else
                                                              dict if isinstance(s, dict) else s)), False)
    if chosen is False:
        kinds = [KINDS.get(list if isinstance(s, list) else dict if isinstance(s, dict) else s, "?") for s in options]
        what = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 2 else kinds)
        got = KINDS[type(value)] if isinstance(value, (dict, list)) else repr(value)[:60]
        raise UsageError(f"{label}{f' (key {key})' if key else ''}: expected {what}, got {got}; {fix}")
    if isinstance(chosen, list):
        for i, item in enumerate(value):
            check_shape(item, chosen[0], label, fix, f"{key}[{i}]")
    elif isinstance(chosen, dict):
        for name, inner in chosen.items():
            if name == "*":
                for k, item in value.items():
                    check_shape(item, inner, label, fix, f"{key}.{k}" if key else str(k))
                continue
            name, optional = name.rstrip("?"), name.endswith("?")
            path = f"{key}.{name}" if key else name
            if name in value:
                check_shape(value[name], inner, label, fix, path)
            elif not optional:
                raise UsageError(f"{label} has no key {path}; {fix}")


def _is(value, kind) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def read_table(path: Path, fix: str, columns=(), numbers=()):
    """A CSV file as a pandas DataFrame holding ``columns``, with a number (or nothing) in every row of ``numbers``;
    anything else (unreadable, unparsable, a column missing, text where a number belongs) is a one-line
    ``UsageError`` naming the file, the column and row, and ``fix``."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsageError(f"{str(path)!r} cannot be read as a table ({str(exc).splitlines()[0][:120]}); {fix}") from None
    missing = [c for c in (*columns, *numbers) if c not in table.columns]
    if missing:
        raise UsageError(f"{str(path)!r} has no column {', '.join(missing)}; {fix}")
    for column in numbers:
        bad = pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()
        if bad.any():
            row = int(bad.idxmax())
            raise UsageError(f"{str(path)!r} (column {column}, row {row + 1}): expected a number, got "
                             f"{table[column].iloc[row]!r}; {fix}")
        table[column] = pd.to_numeric(table[column])
    return table


def check_output(path, flag: str, *, folder: bool = False, whole: bool = False, what: str = "file",
                 example: str = "out.json", inputs=()) -> Path:
    """Before any work, refuse an output path that cannot be written, as a one-line ``UsageError`` naming ``flag``,
    the path and the problem: a file asked for where a folder is (``what`` / ``example`` name the file to give), a
    regular file where a folder is, a parent that is a regular file, or a place this process cannot create files
    in (permissions, a read-only or virtual file system such as /proc: tried by creating and removing an empty
    file, so nothing is left). ``folder``: the path is a folder written into, or with ``whole`` one replaced whole
    from a folder made beside it (``atomic_dir``); else a file replaced atomically (``atomic_write``), which must
    not be one of the tool's ``inputs`` (files or folders: a file already inside one) it would destroy."""
    path = Path(path)
    shown = f"{flag} {str(path)!r}"
    for source in inputs if not folder else ():
        source, target = Path(source).resolve(), path.resolve()
        if target == source or (source.is_dir() and source in target.parents and target.exists()):
            raise UsageError(f"{shown} is {'the input' if target == source else 'a file inside the input'} "
                             f"{str(source)!r}; it would be overwritten: name a new file")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{shown} is a file, not a folder; choose a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{shown} is a folder; name the {what} to write, e.g. {path / example}")
    start = Path(os.path.abspath(path if folder and not whole else path.parent))
    ancestor = next(p for p in (start, *start.parents) if p.exists() or p == p.parent)
    if not ancestor.is_dir():
        raise UsageError(f"{shown} cannot be written: its parent {str(ancestor)!r} is a regular file, not a folder; "
                         "choose a path under a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".write-check-")
    except OSError as exc:
        raise UsageError(f"{shown} cannot be written: no file can be created in {str(ancestor)!r} "
                         f"({exc.strerror or exc}); choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_replaceable(out: Path, marker: str, inputs=(), default: str | None = None) -> None:
    """Refuse an ``out`` that would destroy something else when replaced: an input folder, a folder holding one, or
    an existing non-empty folder (or file) that is not an earlier output (it lacks ``marker``). ``default``: the
    calling command's own default ``--out``, named in the message."""
    out = Path(out).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or out in src.parents:
            raise UsageError(f"--out {str(out)!r} is or holds the input {str(src)!r}; it would be replaced: choose "
                             f"another folder{f' (the default is {default})' if default else ''}")
    check_output(out, "--out", folder=True, whole=True)  # also for callers that did not check it first
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise UsageError(f"--out {str(out)!r} exists and is not an earlier output (no {marker}); it would be "
                         "replaced whole: choose a new folder")


@contextlib.contextmanager
def atomic_dir(out: Path, marker: str, inputs=(), default: str | None = None):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` whole, on error it is removed.
    ``out`` must be new, empty or an earlier output holding ``marker`` (see ``check_replaceable``)."""
    check_replaceable(out, marker, inputs, default)
    out = Path(out).resolve()  # a symbolic link (even one to a missing path) is written through, as bench.run does
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: give the report the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:  # nothing half-written: the earlier output is put back, the new one removed
        if old is not None and not out.exists():
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {str(out)!r} ({exc.strerror or exc}); the earlier output is kept") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
