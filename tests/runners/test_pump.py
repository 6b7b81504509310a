"""Pump: UTF-8 chunking and caps, without a sandbox."""

from __future__ import annotations

from runners.pump import _Sink
from runners.result import Stream


def test_a_character_split_across_reads_is_never_split_across_chunks() -> None:
    """A character whose bytes come in two reads arrives whole, in one chunk."""
    sink = _Sink(Stream.STDOUT, 100)
    euro = "€".encode()
    assert sink.feed(b"a" + euro[:2]) == ("a", False)
    assert sink.feed(euro[2:]) == ("€", False)


def test_invalid_bytes_become_replacement_characters() -> None:
    """Bytes that are not UTF-8, and a character cut off at the end, arrive as U+FFFD."""
    sink = _Sink(Stream.STDOUT, 100)
    text, _ = sink.feed(b"x\xffy")
    assert text == "x\ufffdy"
    sink.feed("😀".encode()[:2])
    assert sink.finish() == "\ufffd"


def test_cap_keeps_exactly_the_first_bytes_and_drops_a_split_character() -> None:
    """Output over the cap keeps its first bytes, no half character, and is marked truncated."""
    sink = _Sink(Stream.STDOUT, 5)
    text, passed = sink.feed("abcd€".encode())  # the cap falls inside "€"
    assert (text, passed, sink.is_truncated) == ("abcd", True, True)
    assert sink.finish() == ""
    assert sink.feed(b"more") == ("", False)


def test_output_of_exactly_the_cap_is_not_truncated() -> None:
    """Output of exactly the cap arrives whole and is not marked truncated."""
    sink = _Sink(Stream.STDOUT, 4)
    assert sink.feed(b"abcd") == ("abcd", False)
    assert not sink.is_truncated
