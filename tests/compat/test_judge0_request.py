"""A Judge0 submission request becomes a livecode run: limits, arguments, base64, defaults."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from livecode.compat.judge0_languages import Catalog
from livecode.compat.judge0_request import (
    SubmissionInvalid,
    SubmissionRequest,
    config_info,
    parse_submission,
)
from livecode.config import Settings
from runners import detect_languages

SETTINGS = Settings(database_url="sqlite://", wall_timeout_s=10, memory_mb=256)


def parse(base64_encoded: bool = False, **params: Any) -> SubmissionRequest:
    params = {"language_id": 71, "source_code": "print(1)", **params}
    return parse_submission(
        params,
        base64_encoded=base64_encoded,
        settings=SETTINGS,
        catalog=Catalog(detect_languages()),
    )


def test_no_limits_asked_means_livecodes_own() -> None:
    """A submission without limits runs with the server's; its fields say which they are."""
    request = parse()
    assert request.options.limits is None
    assert request.fields["wall_time_limit"] == 10.0 and request.fields["memory_limit"] == 262144
    assert request.fields["language_id"] == 71 and request.fields["expected_output"] is None


@pytest.mark.parametrize(
    ("fields", "limits"),
    [
        ({"wall_time_limit": 2}, {"timeout_s": 2.0}),
        ({"cpu_time_limit": 1, "cpu_extra_time": 0.5}, {"timeout_s": 1.5}),
        ({"cpu_time_limit": 5, "wall_time_limit": 3}, {"timeout_s": 3.0}),
        ({"cpu_time_limit": 0, "wall_time_limit": 3}, {"timeout_s": 3.0}),  # 0: no CPU limit
        ({"memory_limit": 128000}, {"memory_mb": 125}),
        ({"memory_limit": 2049}, {"memory_mb": 3}),  # never less than asked
        ({"max_processes_and_or_threads": 8}, {"max_processes": 8}),
        ({"max_file_size": 10}, {"output_limit_bytes": 10240}),
        ({"max_file_size": 0}, {"output_limit_bytes": 1}),
        ({"memory_limit": "4096", "wall_time_limit": "1.5"}, {"memory_mb": 4, "timeout_s": 1.5}),
    ],
)
def test_judge0_limits_become_livecodes(fields: dict[str, Any], limits: dict[str, Any]) -> None:
    """Each Judge0 limit lowers the livecode limit it means, never below what was asked."""
    requested = parse(**fields).options.limits
    assert requested is not None
    assert requested.model_dump(exclude_none=True) == limits


def test_limits_out_of_range_answer_each_field() -> None:
    """Every field out of range is named, with Rails' numericality messages."""
    with pytest.raises(SubmissionInvalid) as raised:
        parse(
            wall_time_limit=0.5,
            cpu_extra_time=-1,
            stack_limit=262145,
            max_file_size=101,
            memory_limit=True,
        )
    assert raised.value.errors == {
        "wall_time_limit": ["must be greater than or equal to 1"],
        "cpu_extra_time": ["must be greater than or equal to 0"],
        "stack_limit": ["must be less than or equal to 262144"],
        "max_file_size": ["must be less than or equal to 100"],
        "memory_limit": ["is not a number"],
    }


def test_base64_is_decoded_leniently_like_ruby() -> None:
    """Ruby's decode64 skips newlines and stray characters and needs no padding."""
    source = base64.encodebytes(b"print('a' * 100)").decode()  # lines of 76, newlines
    request = parse(
        base64_encoded=True,
        source_code=source,
        stdin="aGk",  # "hi" without its padding
        expected_output="aG k=\n",
    )
    assert request.source_code == "print('a' * 100)"
    assert request.options.stdin == "hi" and request.fields["expected_output"] == "hi"


def test_arrays_and_objects_are_as_if_left_out() -> None:
    """Rails' permit keeps scalars only."""
    request = parse(stdin=["a"], wall_time_limit={"x": 1})
    assert request.options.stdin is None and request.options.limits is None


def test_too_many_or_unsplittable_arguments() -> None:
    """Arguments must split into at most 64 shell words."""
    with pytest.raises(SubmissionInvalid) as many:
        parse(command_line_arguments=" ".join("a" * 65))
    with pytest.raises(SubmissionInvalid) as unbalanced:
        parse(command_line_arguments="'open")
    assert many.value.errors == {
        "command_line_arguments": ["has too many arguments (maximum is 64)"]
    }
    assert unbalanced.value.errors["command_line_arguments"][0].startswith("cannot be split")


def test_sizes_are_livecodes() -> None:
    """Source and stdin larger than livecode takes are Judge0-shaped 422s, not 413s."""
    with pytest.raises(SubmissionInvalid) as raised:
        parse(source_code="#" * 262145, stdin="x" * 1048577)
    assert raised.value.errors == {
        "source_code": ["is too long (maximum is 262144 bytes)"],
        "stdin": ["is too long (maximum is 1048576 bytes)"],
    }


def test_texts_no_program_can_hold_are_refused() -> None:
    """Lone surrogates (JSON can carry them) and NUL where the store cannot keep it."""
    with pytest.raises(SubmissionInvalid) as raised:
        parse(source_code="print(1)\x00", stdin="\ud800", expected_output="a\x00")
    assert raised.value.errors == {
        "source_code": ["must not contain NUL characters"],
        "stdin": ["must be valid Unicode text (no lone surrogates)"],
        "expected_output": ["must not contain NUL characters"],
    }


def test_config_info_has_the_sdks_keys_and_types() -> None:
    """The SDK's pydantic Config accepts /config_info as it stands."""
    from judge0.base_types import Config

    config = Config(**config_info(SETTINGS))
    assert config.max_cpu_time_limit == 10.0 and config.max_memory_limit == 262144
