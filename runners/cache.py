"""Compiled artifacts: the binary cache, and the support files compiled programs link with.

The cache maps sha256(source, compiler version, flags) to a binary, bounded in bytes and
evicted least-recently-used (by mtime), shared by every process using the same work root. A
binary larger than a sixteenth of the bound is not cached: a few huge ones (a 60 MB static
array) would evict everyone else's.

Runs of one source at the same time share one compile: the first takes the key's turn (a
flock on a file of its own, so threads and processes alike wait), the others wait for it and
then find the binary in the cache. A compile that fails caches nothing: the next in line
compiles again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

_CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
# linked into every C++ program: stdout is line-buffered even on a pipe, so `cout << x << '\n'`
# reaches the caller line by line without the program flushing
_LINEBUF_SOURCE = """\
#include <cstdio>
__attribute__((constructor(101))) static void livecode_line_buffered_stdout() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
}
"""
_COMPILE_TIMEOUT_S = 120.0
_MESSAGES = ".messages"  # beside each cached binary: what the compiler said making it
_STDCXX_HEADER = "/usr/include/x86_64-linux-gnu/c++/12/bits/stdc++.h"
_TURN_POLL_S = 0.01  # how often a compile waiting for its turn tries again


class BinaryCache:
    """Compiled binaries by key; safe to share between threads and processes."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 16
        os.makedirs(directory, mode=0o755, exist_ok=True)
        os.chmod(directory, 0o755)

    @staticmethod
    def key(source: str, compiler_version: str, flags: tuple[str, ...]) -> str:
        """Return the cache key of a source compiled by this compiler with these flags."""
        digest = hashlib.sha256()
        for part in (compiler_version, "\0".join(flags), source):
            digest.update(part.encode("utf-8", "surrogatepass"))  # as the source is sent
            digest.update(b"\0\0")
        return digest.hexdigest()

    def checkout(self, key: str) -> tuple[str, str] | None:
        """Return a private hard link to the cached binary (remove it after use) and what the
        compiler said making it, or None."""
        path = os.path.join(self.directory, key)
        private = os.path.join(self.directory, f".use-{uuid.uuid4().hex}")
        try:
            os.link(path, private)  # eviction may unlink `path` meanwhile; the link stays valid
            os.utime(path)
        except FileNotFoundError:
            return None
        try:
            with open(path + _MESSAGES, encoding="utf-8") as messages:
                return private, messages.read()
        except FileNotFoundError:  # evicted meanwhile (or cached before messages were kept)
            os.unlink(private)
            return None

    @contextlib.contextmanager
    def turn(self, key: str, *, wait_s: float, should_stop: Callable[[], bool]) -> Iterator[None]:
        """Wait until no other thread or process compiles `key`, then hold that turn for the
        block (check the cache again first: the compile waited for may have put it there).

        Waits at most `wait_s`, or until `should_stop()` (a cancel): then the block runs
        without the turn.
        """
        path = os.path.join(self.directory, f".turn-{key}")  # a dot: never evicted
        deadline = time.monotonic() + wait_s
        held: int | None = None
        while held is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if should_stop() or time.monotonic() >= deadline:
                    break
                time.sleep(_TURN_POLL_S)
                continue
            try:
                is_current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                is_current = False
            if is_current:
                held = fd
            else:  # its last holder removed it after we opened it: take the new one
                os.close(fd)
        try:
            yield
        finally:
            if held is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # before letting go: whoever waits opens the path anew
                os.close(held)

    def put(self, key: str, produced: str, compile_output: str) -> str:
        """Copy a freshly compiled binary into the cache (root-owned, 0755) with what the
        compiler said (its warnings are the program's on every later run too), then evict.

        Returns a private hard link to it, as checkout does (remove it after use). A binary
        over max_entry_bytes is not cached: the private copy is all there is of it.
        """
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".new-")
        private = os.path.join(self.directory, f".use-{uuid.uuid4().hex}")
        try:
            # copy the bytes rather than moving the file: the sandbox owned it and could have
            # left a symlink, hard link or setuid bit there
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
            with os.fdopen(fd, "wb") as out, open(os.open(produced, flags), "rb") as binary:
                if not os.path.isfile(f"/proc/self/fd/{binary.fileno()}"):
                    raise OSError(f"{produced} is not a regular file")
                shutil.copyfileobj(binary, out, 1 << 20)
            os.chmod(temporary, 0o755)
            messages = compile_output.encode()
            if os.stat(temporary).st_size + len(messages) > self.max_entry_bytes:
                os.rename(temporary, private)
                return private
            os.link(temporary, private)
            # the messages first: a binary in the cache has its messages beside it
            _replace(os.path.join(self.directory, key + _MESSAGES), messages)
            os.replace(temporary, os.path.join(self.directory, key))
        except BaseException:
            for path in (temporary, private):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            raise
        self._evict(keep=key)
        return private

    def _evict(self, keep: str) -> None:
        binaries: dict[str, tuple[float, int]] = {}
        messages: dict[str, int] = {}
        for entry in os.scandir(self.directory):
            if entry.name.startswith("."):
                continue  # in the making, or in use
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.endswith(_MESSAGES):
                messages[entry.name.removesuffix(_MESSAGES)] = stat.st_size
            else:
                binaries[entry.name] = (stat.st_mtime, stat.st_size)
        for orphan in messages.keys() - binaries.keys() - {keep}:  # a put or evict cut short
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, orphan + _MESSAGES))
        sizes = {key: size + messages.get(key, 0) for key, (_mtime, size) in binaries.items()}
        total = sum(sizes.values())
        for _mtime, key in sorted((mtime, key) for key, (mtime, _size) in binaries.items()):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            path = os.path.join(self.directory, key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                total -= sizes[key]
                os.unlink(path + _MESSAGES)  # after the binary: checkout looks for it second


def prepare_runtime(directory: str) -> None:
    """Create the files every sandbox sees at /opt/livecode: passwd, group, linebuf.o."""
    os.makedirs(os.path.join(directory, "pch", "bits"), mode=0o755, exist_ok=True)
    _write_once(
        os.path.join(directory, "passwd"),
        b"root:x:0:0::/:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n",
    )
    _write_once(os.path.join(directory, "group"), b"root:x:0:\nnogroup:x:65534:\n")
    linebuf = os.path.join(directory, "linebuf.o")
    if not os.path.exists(linebuf) and os.access("/usr/bin/g++", os.X_OK):
        with tempfile.TemporaryDirectory() as scratch:
            source = os.path.join(scratch, "linebuf.cpp")
            with open(source, "w") as out:
                out.write(_LINEBUF_SOURCE)
            built = os.path.join(scratch, "linebuf.o")
            _compile(["/usr/bin/g++", "-O2", "-c", source, "-o", built])
            os.chmod(built, 0o644)
            shutil.move(built, linebuf + ".tmp")
            os.replace(linebuf + ".tmp", linebuf)


def build_pch(directory: str, flags: tuple[str, ...], stop: threading.Event | None = None) -> bool:
    """Build the precompiled <bits/stdc++.h> once (about 3 s); True when it is ready.

    Setting ``stop`` kills the compiler (OSError then): nothing is left running.
    """
    bits = os.path.join(directory, "pch", "bits")
    gch = os.path.join(bits, "stdc++.h.gch")
    if os.path.exists(gch):
        return True
    if not os.path.exists(_STDCXX_HEADER):
        return False
    with open(os.path.join(directory, "pch.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if os.path.exists(gch):
            return True
        shutil.copyfile(_STDCXX_HEADER, os.path.join(bits, "stdc++.h"))
        os.chmod(os.path.join(bits, "stdc++.h"), 0o644)
        temporary = gch + ".tmp"
        header = os.path.join(bits, "stdc++.h")
        _compile(["/usr/bin/g++", *flags, "-x", "c++-header", header, "-o", temporary], stop)
        os.chmod(temporary, 0o644)
        os.replace(temporary, gch)
    logger.info("precompiled header ready: %s", gch)
    return True


def _compile(argv: list[str], stop: threading.Event | None = None) -> None:
    # a session of its own: g++ and the cc1plus/as it runs are killed together
    with subprocess.Popen(
        argv,
        env=_CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as process:
        deadline = time.monotonic() + _COMPILE_TIMEOUT_S
        output = b""
        while True:
            try:
                output = process.communicate(timeout=0.1)[0]
                break
            except subprocess.TimeoutExpired:
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.communicate()
                    raise OSError(f"{' '.join(argv)} stopped or timed out") from None
    if process.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {output.decode(errors='replace')}")


def _replace(path: str, content: bytes) -> None:
    """Write the file whole under its name (readers see the old one or the new one)."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".new-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _write_once(path: str, content: bytes) -> None:
    if not os.path.exists(path):
        _replace(path, content)
