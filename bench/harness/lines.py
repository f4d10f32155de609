"""Whole console lines from several threads (the runner's per-run threads, a worker's timer) and several processes
(the workers, whose output the runner passes through): each line is written in one call under one lock, so two runs'
lines never run together ("[1/9] a: start[2/9] b: start"); and the worker's stderr passed through to ours
(``StderrTail``: through a pseudo-terminal of our size when ours is a terminal, else in whole lines)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque

LOCK = threading.RLock()
"""Held while anything is written to this process's stderr through this module."""


def emit(text: str, stream=None) -> None:
    """``text`` and its newline in one write, flushed (``print`` writes them separately: another thread's line can
    land between them)."""
    stream = sys.stderr if stream is None else stream
    with LOCK:
        try:
            stream.write(text + "\n")
            stream.flush()
        except (ValueError, OSError):  # a closed or broken stream: nothing to tell
            pass


def emit_bytes(data: bytes) -> None:
    """Bytes another process wrote (whole lines, or a terminal's drawing), after anything this process's text layer
    still holds, in one write."""
    with LOCK:
        try:
            sys.stderr.flush()
            buffer = getattr(sys.stderr, "buffer", None)
            if buffer is None:  # a text-only stream (a test's StringIO)
                sys.stderr.write(data.decode(errors="replace"))
            else:
                buffer.write(data)
            sys.stderr.flush()
        except (ValueError, OSError):
            pass


class LineJoiner:
    """Bytes in, whole lines out: a worker's output is passed on a line at a time (a partial line waits for its
    end), so another worker's line cannot land inside it. A carriage return ends a line too (a progress bar's
    redraw becomes a line of its own)."""

    def __init__(self):
        self.partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """The whole lines completed by ``chunk`` (each ending in a newline); the rest is kept."""
        data = (self.partial + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return b"".join(line + b"\n" for line in data[:cut].split(b"\n") if line.strip())

    def rest(self) -> bytes:
        """What is left when the stream ends (a last line without its newline), newline added."""
        rest, self.partial = self.partial, b""
        return rest + b"\n" if rest.strip() else b""


def terminal_size() -> tuple[int, int]:
    """(rows, columns) of our terminal: stderr's, else stdout's, else the controlling terminal's, else ``LINES`` /
    ``COLUMNS``; 0 where none says."""
    import fcntl
    import struct
    import termios

    for stream in (sys.stderr, sys.stdout):
        try:
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8))[:2]
            if cols:
                return rows, cols
        except (OSError, ValueError, AttributeError):
            pass
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
        try:
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        finally:
            os.close(fd)
        if cols:
            return rows, cols
    except OSError:
        pass
    number = lambda name: int(os.environ[name]) if os.environ.get(name, "").isdigit() else 0  # noqa: E731
    return number("LINES"), number("COLUMNS")


def copy_window_size(fd: int) -> None:
    """Give a worker's pseudo-terminal our terminal's size (a new one has 0 columns, where tqdm draws nothing); its
    tqdm bar re-reads the size at every redraw (``dynamic_ncols``), so a resized terminal is followed. 80 x 24 only
    when nothing tells our size."""
    import fcntl
    import struct
    import termios

    rows, cols = terminal_size()
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0))
    except OSError:  # the worker's end already closed
        pass


class StderrTail:
    """Pass a worker's stderr through to ours and keep its last lines. On a terminal the worker gets a
    pseudo-terminal of our size (its bar draws as on ours); otherwise its output is passed on in whole lines
    (``bench.harness.lines``), so two workers' lines never share one."""

    live: set["StderrTail"] = set()
    """The pseudo-terminals in use, resized with ours (SIGWINCH)."""

    def __init__(self, lines: int = 40):
        self.lines: deque[str] = deque(maxlen=lines)
        self.tty = sys.stderr.isatty()
        if self.tty:
            import pty
            import termios

            self.fd, self.child_fd = pty.openpty()
            attrs = termios.tcgetattr(self.child_fd)
            attrs[1] &= ~termios.ONLCR  # pass the worker's bytes unchanged
            termios.tcsetattr(self.child_fd, termios.TCSANOW, attrs)
            copy_window_size(self.child_fd)
        else:
            self.fd, self.child_fd = os.pipe()
        self.thread = threading.Thread(target=self.pump, daemon=True)

    def start(self) -> None:
        os.close(self.child_fd)
        if self.tty:
            StderrTail.live.add(self)
        self.thread.start()

    def resize(self) -> None:
        """Our terminal's size onto the worker's pseudo-terminal (set through its master side)."""
        if self in StderrTail.live:
            copy_window_size(self.fd)

    def pump(self) -> None:
        joiner, partial = LineJoiner(), ""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pseudo-terminal whose other end closed
                break
            if not chunk:
                break
            out = chunk if self.tty else joiner.feed(chunk)
            if out:
                emit_bytes(out)
            parts = (partial + chunk.decode(errors="replace")).replace("\r", "\n").split("\n")
            partial = parts.pop()
            self.lines.extend(p.strip() for p in parts if p.strip())
        if not self.tty:
            rest = joiner.rest()
            if rest:
                emit_bytes(rest)
        if partial.strip():
            self.lines.append(partial.strip())
        StderrTail.live.discard(self)
        os.close(self.fd)

    def join(self) -> None:
        self.thread.join(timeout=5)

    def cause(self) -> str:
        """The last line the worker wrote (an exception's message, or the worker's own ``error:`` line)."""
        return self.lines[-1][:500] if self.lines else ""


def follow_window_size() -> None:
    """Resize every worker's pseudo-terminal with ours (SIGWINCH); installed once, from the main thread only."""
    if getattr(follow_window_size, "installed", False) or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGWINCH)

    def resized(signum, frame):
        for tail in list(StderrTail.live):
            tail.resize()
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(signal.SIGWINCH, resized)
        follow_window_size.installed = True
    except (ValueError, OSError):
        pass
