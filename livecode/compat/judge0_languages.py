"""Judge0's language ids mapped onto livecode's languages (reference/compat.md, section 5).

Judge0 CE 1.13.1 names a language and its version by one id. `/languages` lists 71 (Python),
63 (JavaScript) and both 52 and 54 (C++: 52 is what the official SDK sends for ``judge0.CPP``
against 1.13.1); the ids of other releases of the same languages are accepted too, unlisted,
so that a client written for them still runs. Every id answers with the version livecode really
runs. An id of another language, or of one whose toolchain is missing here, does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runners import Language

__all__ = ["Catalog", "Judge0Language"]

# id -> livecode language, listed by /languages
_LISTED = {71: "python", 63: "javascript", 52: "c++", 54: "c++"}
# ids of other releases (1.13.1's GCC 8.3.0, Judge0 1.14.0 and later), accepted but not listed
_ACCEPTED = {
    53: "c++",
    105: "c++",
    92: "python",
    100: "python",
    113: "python",
    93: "javascript",
    97: "javascript",
    102: "javascript",
}
# what a livecode execution that was no Judge0 submission answers as its language_id
_DEFAULT_IDS = {"python": 71, "javascript": 63, "c++": 54}
_NAMES = {"python": "Python ({})", "javascript": "JavaScript (Node.js {})", "c++": "C++ (GCC {})"}


@dataclass(frozen=True, slots=True)
class Judge0Language:
    """One Judge0 language id and the livecode language it runs."""

    id: int
    language: Language

    @property
    def name(self) -> str:
        return _NAMES[self.language.id].format(self.language.version)

    def as_json(self) -> dict[str, Any]:
        """GET /languages/{id}: Judge0's LanguageSerializer, with livecode's real commands."""
        language = self.language
        compile_cmd = None
        if language.compile_argv is not None:
            compile_cmd = _command(language.compile_argv, language.source_file, "main")
        return {
            "id": self.id,
            "name": self.name,
            "is_archived": False,
            "source_file": language.source_file,
            "compile_cmd": compile_cmd,
            "run_cmd": _command(language.run_argv, language.source_file, "./main"),
        }


class Catalog:
    """The Judge0 ids this server answers to, given the languages it detected at start."""

    def __init__(self, languages: tuple[Language, ...]) -> None:
        available = {language.id: language for language in languages if language.available}
        self._by_id = {
            id_: Judge0Language(id_, available[name])
            for id_, name in {**_LISTED, **_ACCEPTED}.items()
            if name in available
        }
        self.listed = sorted(
            (self._by_id[id_] for id_ in _LISTED if id_ in self._by_id),
            key=lambda language: (language.name, language.id),
        )

    def get(self, language_id: int) -> Judge0Language | None:
        """The language of an id, if it exists here."""
        return self._by_id.get(language_id)

    def every(self) -> list[Judge0Language]:
        """Listed and accepted ids alike, by name (GET /languages/all)."""
        return sorted(self._by_id.values(), key=lambda language: (language.name, language.id))

    @staticmethod
    def default_id(language: str) -> int:
        """The id an execution made through livecode's own API shows (python is 71...)."""
        return _DEFAULT_IDS[language]


def _command(argv: tuple[str, ...], source_file: str, binary: str) -> str:
    """A recipe's argv as a command line: livecode's support files and heap flag left out."""
    words = []
    for word in argv:
        if "{runtime}" in word or word == "{heap_cap}":
            continue
        words.append(word.replace("{source}", source_file).replace("{binary}", binary))
    return " ".join(words)
