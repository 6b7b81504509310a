"""Control: how another thread cancels a run, feeds its stdin or resizes its terminal, and
learns that it started."""

from __future__ import annotations

import threading
from collections.abc import Callable

from runners import terminal


class Control:
    """Cancel a run, write to its stdin or resize its terminal while it runs. Thread-safe; one
    Control per run, whose test cases may run side by side (each pumped on its own, all cancelled
    together).

    Calls made before the run starts take effect when it starts: a cancelled Control makes
    run() return CANCELLED at once, written data is delivered first, and the last size asked
    for is the terminal's size when the program starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._stdin_eof = False
        self._stdin: list[bytes] = []
        self._size: tuple[int, int] | None = None  # (cols, rows) last asked for
        self._size_changed = False
        self._wakes: list[Callable[[], None]] = []  # of the pumps running, one per stage
        self._on_start: Callable[[], None] | None = None
        self._is_attached = False  # a pump has started: it called (or calls) on_start
        self._started = threading.Event()  # ... and that call has returned

    @property
    def is_cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the run; it ends as CANCELLED. Idempotent."""
        with self._lock:
            self._cancelled = True
            self._wake_pump()

    def write(self, data: bytes) -> None:
        """Send bytes to the program's stdin (interactive runs); ignored after close_stdin()."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"stdin data must be bytes, got {type(data).__name__}")
        with self._lock:
            if self._stdin_eof or not data:
                return
            self._stdin.append(bytes(data))
            self._wake_pump()

    def close_stdin(self) -> None:
        """Send EOF to the program's stdin once the data written so far is delivered."""
        with self._lock:
            self._stdin_eof = True
            self._wake_pump()

    def resize(self, cols: int, rows: int) -> None:
        """Resize the terminal of a tty run (the program gets SIGWINCH); ignored by other runs.

        Raises ValueError outside 1..terminal.MAX_COLS and 1..terminal.MAX_ROWS.
        """
        terminal.check_size(cols, rows)
        with self._lock:
            self._size = (cols, rows)
            self._size_changed = True
            self._wake_pump()

    @property
    def size(self) -> tuple[int, int] | None:
        """The terminal size (cols, rows) last asked for with resize(), if any."""
        return self._size

    def on_start(self, callback: Callable[[], None]) -> None:
        """Have `callback` called once, in the run's thread, when its first process has started
        and before any of its output is passed on; never if the run does not start."""
        with self._lock:
            self._on_start = callback

    def _attach(self, wake: Callable[[], None]) -> None:
        """A pump starts: wake it for what comes. The first one calls on_start; any other (a
        test case started beside it) waits until that call has returned, so that no output
        is passed on before the start is announced."""
        with self._lock:
            self._wakes.append(wake)
            on_start, self._on_start = self._on_start, None
            is_first, self._is_attached = not self._is_attached, True
        if not is_first:
            self._started.wait()
            return
        try:
            if on_start is not None:
                on_start()
        finally:
            self._started.set()

    def _detach(self, wake: Callable[[], None]) -> None:
        """The pump has ended: wake it no more. Idempotent."""
        with self._lock:
            if wake in self._wakes:
                self._wakes.remove(wake)

    def _wake_pump(self) -> None:
        # Under the lock: once _detach() returns, no wake() is under way, so no late one
        # reaches the next run of the pump's thread, which keeps its wake fd (pump.py).
        for wake in self._wakes:
            wake()

    def _take(self, *, stdin: bool = True) -> tuple[bytes, bool, bool]:
        """Return (pending stdin, stdin closed, cancelled) and clear the pending data.

        With stdin=False (a stage that reads no input, like a compile) the data stays for the
        stage that does: a user who types while the compiler runs is not lost.
        """
        with self._lock:
            if not stdin:
                return b"", False, self._cancelled
            data = b"".join(self._stdin)
            self._stdin.clear()
            return data, self._stdin_eof, self._cancelled

    def _take_size(self) -> tuple[int, int] | None:
        """Return the size asked for since the last call, if any."""
        with self._lock:
            changed, self._size_changed = self._size_changed, False
            return self._size if changed else None
