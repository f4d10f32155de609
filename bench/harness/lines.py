"""Whole console lines from several threads (the runner's per-run threads, a worker's timer) and several processes
(the workers, whose output the runner passes through): each line is written in one call under one lock, so two runs'
lines never run together ("[1/9] a: start[2/9] b: start")."""

from __future__ import annotations

import sys
import threading

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
