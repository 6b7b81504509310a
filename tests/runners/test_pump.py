"""Pump: UTF-8 chunking and caps, without a sandbox."""

from __future__ import annotations

from runners.pump import _Sink
from runners.result import Stream


def test_a_character_split_across_reads_is_never_split_across_chunks() -> None:
    sink = _Sink(Stream.STDOUT, 100)
    euro = "€".encode()
    assert sink.feed(b"a" + euro[:2]) == ("a", False)
    assert sink.feed(euro[2:]) == ("€", False)


def test_invalid_bytes_become_replacement_characters() -> None:
    sink = _Sink(Stream.STDOUT, 100)
    text, _ = sink.feed(b"x\xffy")
    assert text == "x\ufffdy"
    sink.feed("😀".encode()[:2])
    assert sink.finish() == "\ufffd"


def test_cap_keeps_exactly_the_first_bytes_and_drops_a_split_character() -> None:
    sink = _Sink(Stream.STDOUT, 5)
    text, passed = sink.feed("abcd€".encode())  # the cap falls inside "€"
    assert (text, passed, sink.is_truncated) == ("abcd", True, True)
    assert sink.finish() == ""
    assert sink.feed(b"more") == ("", False)


def test_output_of_exactly_the_cap_is_not_truncated() -> None:
    sink = _Sink(Stream.STDOUT, 4)
    assert sink.feed(b"abcd") == ("abcd", False)
    assert not sink.is_truncated
