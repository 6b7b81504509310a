"""Language registry: ids, aliases, detected versions."""

from __future__ import annotations

import re

import pytest

from runners import UnknownLanguage, detect_languages, resolve_language


def test_three_languages_with_real_versions() -> None:
    """Python, JavaScript and C++ are offered with the versions installed, probed once."""
    languages = {language.id: language for language in detect_languages()}
    assert set(languages) == {"python", "javascript", "c++"}
    for language in languages.values():
        assert language.available, language
        assert language.version and re.fullmatch(r"\d+\.\d+(\.\d+)?", language.version)
    assert languages["python"].version.startswith("3.11")  # Debian's, never pyenv's
    assert detect_languages() is detect_languages()  # probed once


@pytest.mark.parametrize(
    ("name", "language_id"),
    [
        ("python", "python"),
        ("py", "python"),
        ("js", "javascript"),
        ("node", "javascript"),
        ("JavaScript", "javascript"),
        ("cpp", "c++"),
        ("c++", "c++"),
    ],
)
def test_resolve_by_id_or_alias(name: str, language_id: str) -> None:
    """A language is found by its id or a usual alias: py, js, node, cpp."""
    assert resolve_language(name).id == language_id


def test_unknown_language_is_a_clear_error() -> None:
    """An unknown language is refused by its name."""
    with pytest.raises(UnknownLanguage, match="cobol"):
        resolve_language("cobol")
