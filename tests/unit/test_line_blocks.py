"""A JSON Lines file's lines taken a block at a time from one reused buffer
(refinery.ingest.line_blocks.BufferedLines): the lines that iterating the file gives, in order,
whatever the block sizes, the buffer's size, a byte range's end or a read error. And a block's
own ids claimed at once (IdAssigner.explicit_all) as one by one."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinery.ids import IdAssigner
from refinery.ingest import line_blocks
from refinery.ingest.jsonl_blocks import parse_lines
from refinery.ingest.line_blocks import BufferedLines, IteratedLines
from refinery.ingest.text_reader import _lines_before
from refinery.kernel.ingest_tasks import TaskIds


@pytest.fixture(autouse=True)
def small_buffer(monkeypatch):
    """Reads of 7 bytes into a buffer of 16 to start with: blocks grow it, leftovers move."""
    monkeypatch.setattr(BufferedLines, "READ_BYTES", 7)
    monkeypatch.setattr(BufferedLines, "FIRST_BYTES", 16)


def taken(source: BufferedLines | IteratedLines, sizes: list[int]) -> list:
    """The lines of each take of ``sizes`` (0: one next_line), then of takes of 3 to the end."""
    out = []
    for n in [*sizes, *[3] * 200]:
        if n == 0:
            out.append(source.next_line())
            continue
        block, error = source.take(n)
        assert error is None
        out.append(block.lines())
        assert [block.line(i) for i in range(len(block))] == out[-1]
        assert bytes(block.data) == b"".join(out[-1])
    return out


LINES = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(lines=LINES, final=st.booleans(), sizes=st.lists(st.integers(0, 6), max_size=8))
def test_the_lines_and_blocks_of_iterating_the_file(lines, final, sizes):
    data = b"\n".join(lines) + (b"\n" if final and lines else b"")
    assert taken(BufferedLines(io.BytesIO(data)), sizes) == taken(IteratedLines(io.BytesIO(data)), sizes)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(lines=LINES, start=st.integers(0, 400), length=st.integers(0, 400), sizes=st.lists(st.integers(0, 6)))
def test_a_byte_range_reads_the_lines_that_start_in_it(lines, start, length, sizes):
    data = b"\n".join(lines)
    ours, reference = io.BytesIO(data), io.BytesIO(data)
    for stream in (ours, reference):  # as SourceReader._read_jsonl_range starts a range
        if start > 0:
            stream.seek(start - 1)
            stream.readline()
    end = start + length
    expected = taken(IteratedLines(_lines_before(reference, end)), sizes)
    assert taken(BufferedLines(ours, end - ours.tell()), sizes) == expected


def test_the_buffer_grows_and_is_reused():
    data = b"".join(b'{"text": "%d"}\n' % i for i in range(40))
    lines = BufferedLines(io.BytesIO(data))
    first, _ = lines.take(30)  # ~480 bytes: the 16-byte buffer doubles in place
    assert len(first) == 30 and len(lines._buf) >= 480
    buf = lines._buf
    second, _ = lines.take(30)
    assert lines._buf is buf and len(second) == 10  # the same buffer: nothing held the first block
    assert second.lines() == data.splitlines(keepends=True)[30:]


def test_a_block_still_held_is_never_overwritten():
    data = b"".join(b'{"text": "%d"}\n' % i for i in range(40))
    lines = BufferedLines(io.BytesIO(data))
    block, _ = lines.take(5)
    held = pa.py_buffer(block.data)  # something kept the data
    before = held.to_pybytes()
    assert lines.take(30)[0].lines() == data.splitlines(keepends=True)[5:35]
    assert held.to_pybytes() == before == b"".join(data.splitlines(keepends=True)[:5])


def test_parsing_a_block_holds_nothing_of_the_buffer():
    """Arrow's JSON reader copies the strings: the buffer is reused after a parsed block (the
    point of reading this way), and the parsed texts stay what they were."""
    data = b"".join(b'{"id": "d%d", "text": "text %d"}\n' % (i, i) for i in range(40))
    lines = BufferedLines(io.BytesIO(data))
    block, _ = lines.take(20)
    parsed = parse_lines(block, 100)
    buf = lines._buf
    lines.take(20)
    assert lines._buf is buf
    assert parsed.texts.to_pylist() == [f"text {i}" for i in range(20)]


class Failing(io.RawIOBase):
    """A stream that fails after ``good`` bytes."""

    def __init__(self, data: bytes, good: int):
        self.data, self.good, self.pos = data, good, 0

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        if self.pos >= self.good:
            raise OSError(5, "Input/output error")
        n = min(len(view), self.good - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("good", [0, 10, 16, 17, 40, 63])
def test_a_read_error_ends_the_lines_after_the_last_whole_one(good):
    data = b"".join(b"line %02d\n" % i for i in range(8))  # 8 bytes a line
    whole = data.splitlines(keepends=True)[: good // 8]
    block, error = BufferedLines(Failing(data, good)).take(100)
    assert isinstance(error, OSError)
    assert block.lines() == whole
    one_by_one = BufferedLines(Failing(data, good))
    assert [one_by_one.next_line() for _ in whole] == whole
    with pytest.raises(OSError):
        one_by_one.next_line()


def test_a_private_map_grows_in_place():
    """A shared anonymous map grown in place leaves its new pages unbacked (a bus error on
    write); the buffer's is private."""
    buf = line_blocks.anonymous_map(4096)
    buf.resize(1 << 20)
    buf[-1:] = b"x"
    assert buf[-1:] == b"x"


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    seen=st.lists(st.sampled_from("abcdefgh"), max_size=4),
    values=st.lists(st.sampled_from("abcdefghij"), max_size=6),
)
def test_ids_claimed_at_once_as_one_by_one(seen, values):
    """IdAssigner.explicit_all (a block's own ids): where it claims, explicit of each in order
    accepts each; where it refuses, nothing was claimed."""
    ours, reference = IdAssigner(), IdAssigner()
    for value in seen:
        ours.explicit(value)
        reference.explicit(value)
    before = set(ours._seen)
    if ours.explicit_all(values):
        assert [reference.explicit(v) for v in values] == [(v, None) for v in values]
        assert ours._seen == reference._seen
    else:
        assert ours._seen == before
        assert any(reference.explicit(v)[1] for v in values)


def test_a_tasks_ids_are_never_claimed_at_once():
    """A task's assigner records each id (its explicit is its own): the block takes them one by one."""
    assert not TaskIds().explicit_all(["a", "b"])
