"""The lines of a JSON Lines file, taken a block at a time, without a bytes object per line.

The text inbox admits clean files a block of ``batch_rows`` lines at a time
(:mod:`refinery.ingest.jsonl_blocks`), and a block is parsed from one contiguous buffer. Iterating
a file's lines made a bytes object per line and then joined them into a second copy of the block:
two fresh copies of every byte (on the 105 MB real corpus ~0.1 CPU s, half of it the kernel
zeroing the pages they were given). :class:`BufferedLines` reads a plain file into one buffer that
is reused from block to block, and cuts its lines at ``\\n`` where a binary file's iteration cuts
them: the same lines, in the same order, with the same numbers. Lines are copied out as bytes only
where the reader needs them one by one (a block the per-line path must judge).

:class:`IteratedLines` offers the same interface over any iterable of lines (a gzip stream), as
before: a compressed stream is read as it always was, so a corrupt archive stops at the same line.
"""

from __future__ import annotations

import contextlib
import mmap
import zlib
from collections.abc import Iterable
from typing import BinaryIO

STREAM_ERRORS = (EOFError, OSError, zlib.error)  # a stream that stops: the lines before it are admitted


class LineBlock:
    """Consecutive lines: ``data`` holds them one after the other, line ``i`` ending at
    ``ends[i]`` (after its ``\\n``; the file's last line may have none). ``data`` may be a view of a
    reader's buffer: it is valid until the reader's next :meth:`take`."""

    def __init__(self, data: bytes | memoryview, ends: list[int], lines: list[bytes] | None = None):
        self.data = data
        self.ends = ends
        self._lines = lines

    def __len__(self) -> int:
        return len(self.ends)

    def line(self, i: int) -> bytes:
        """Line ``i`` as bytes (with its ``\\n``)."""
        if self._lines is not None:
            return self._lines[i]
        return bytes(self.data[self.ends[i - 1] if i else 0 : self.ends[i]])

    def lines(self) -> list[bytes]:
        """Every line as bytes, copied out of ``data`` (for the per-line path)."""
        if self._lines is None:
            self._lines = [self.line(i) for i in range(len(self.ends))]
        return self._lines

    @classmethod
    def of(cls, lines: list[bytes]) -> LineBlock:
        """A block of lines already read one by one."""
        ends, end = [], 0
        for line in lines:
            end += len(line)
            ends.append(end)
        return cls(b"".join(lines), ends, lines)


class IteratedLines:
    """Blocks and single lines of an iterable of lines (a gzip stream's), read as they come."""

    def __init__(self, lines: Iterable[bytes]):
        self._lines = iter(lines)

    def take(self, n: int) -> tuple[LineBlock, Exception | None]:
        """The next ``n`` lines (fewer at the end), and the stream's error if reading stopped on
        one: the lines read before it are still admitted."""
        block: list[bytes] = []
        try:
            for raw in self._lines:
                block.append(raw)
                if len(block) == n:
                    break
        except STREAM_ERRORS as err:
            return LineBlock.of(block), err
        return LineBlock.of(block), None

    def next_line(self) -> bytes | None:
        """The next line, None at the end (a stream error is raised)."""
        return next(self._lines, None)


class BufferedLines:
    """Blocks and single lines of a binary stream, read into one buffer reused from block to block.

    The buffer is a private anonymous memory map: its pages are given to the process as they are
    first written, once, and it grows in place (``mremap``) while a block does not fit, without a
    copy.

    ``limit`` (bytes from the stream's position): only the lines that start before it are read, as
    a byte range's task reads them (a line crossing it is read whole). A read error ends the lines
    after the last whole one read before it, and is handed back with them, as
    :class:`IteratedLines` does; a stream's last line needs no ``\\n``.
    """

    READ_BYTES = 1 << 20  # per read call: what is left over after a block (moved to the front) stays small
    # The buffer's first size (it doubles while a block does not fit): small, so that a small file
    # touches only the pages it fills, in 4 KB pages; a buffer that grows asks for huge pages.
    FIRST_BYTES = 2 << 20

    def __init__(self, stream: BinaryIO, limit: int | None = None):
        self._stream = stream
        self._buf = anonymous_map(self.FIRST_BYTES)
        self._start = 0  # the first byte not yet handed out
        self._filled = 0  # the bytes of the buffer that hold data
        self._base = 0  # the stream offset (from where it started) of the buffer's first byte
        self._limit = limit
        self._eof = False
        self._error: Exception | None = None
        self._view: memoryview | None = None  # the last block's data

    def take(self, n: int) -> tuple[LineBlock, Exception | None]:
        """The next ``n`` lines (fewer at the end) and the error reading stopped on, if any."""
        self._recycle()
        ends: list[int] = []
        pos = scan = 0  # where the next line starts; where to look for its end
        while len(ends) < n and (self._limit is None or self._base + pos < self._limit):
            newline = self._buf.find(b"\n", scan, self._filled)
            if newline >= 0:
                pos = scan = newline + 1
                ends.append(pos)
            elif self._eof:
                if pos < self._filled and self._error is None:  # the last line, without a newline
                    pos = self._filled
                    ends.append(pos)
                break
            else:
                scan = self._filled
                self._fill()
        self._start = pos
        self._view = memoryview(self._buf)[:pos]
        error, self._error = self._error, None
        return LineBlock(self._view, ends), error

    def next_line(self) -> bytes | None:
        """The next line, None at the end (a read error is raised)."""
        block, error = self.take(1)
        if error is not None:
            raise error
        return block.line(0) if len(block) else None

    def _recycle(self) -> None:
        """Drop the bytes handed out: move what follows them to the front of the buffer. If the
        last block's data is still held (a buffer exported from it), the rest goes to a new buffer
        instead, so that nothing handed out is ever overwritten."""
        rest = self._filled - self._start
        if self._view is not None:
            try:
                self._view.release()
            except BufferError:
                self._buf = copied(self._buf, self._start, self._filled, len(self._buf))
                self._start = 0
            self._view = None
        if self._start:
            self._buf.move(0, self._start, rest)
        self._base += self._start
        self._start, self._filled = 0, rest

    def _fill(self) -> None:
        """Read up to ``READ_BYTES`` more (the buffer doubled when full); mark the end or the error."""
        if self._filled + self.READ_BYTES > len(self._buf):
            try:
                self._buf.resize(2 * len(self._buf))
            except (OSError, SystemError):  # no mremap on this system: a copy
                self._buf = copied(self._buf, 0, self._filled, 2 * len(self._buf))
            in_huge_pages(self._buf)
        try:
            with memoryview(self._buf) as whole, whole[self._filled : self._filled + self.READ_BYTES] as view:
                got = self._stream.readinto(view)
        except STREAM_ERRORS as err:
            self._eof, self._error = True, err
            return
        if not got:
            self._eof = True
        else:
            self._filled += got


def anonymous_map(size: int) -> mmap.mmap:
    """A private anonymous memory map of ``size`` bytes. Private: a shared one (``mmap(-1, n)``'s
    default) is a fixed-size memory file, and growing it in place leaves the new pages unbacked (a
    bus error on the first write)."""
    flags = getattr(mmap, "MAP_PRIVATE", None)
    if flags is None:  # Windows: no flags, and no such pitfall
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=flags | mmap.MAP_ANONYMOUS)


def in_huge_pages(buf: mmap.mmap) -> None:
    """Ask for huge pages for a grown buffer, where the system has them: it is written whole,
    front to back; in 4 KB pages a 38 MB block of the real corpus took ~12,800 page faults (0.05
    CPU s for the whole 110 MB file, reading included), in huge pages ~100 (0.03). Not for a small
    buffer: a small file would have a 2 MB page zeroed for its few KB."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages
            buf.madvise(advice)


def copied(buf: mmap.mmap, start: int, end: int, size: int) -> mmap.mmap:
    """A new map of ``size`` bytes starting with ``buf[start:end]``."""
    fresh = anonymous_map(size)
    fresh[: end - start] = buf[start:end]
    return fresh
