"""The contract's pure parts: which rate limit the settings ask for, and how a request's
validation errors read as one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from interpreter.api.errors import validation_sentence
from interpreter.api.ratelimit import AUTO_PER_KEY, effective_rate_limit, rate_limiter
from interpreter.api.schemas import whole_ms
from interpreter.config import Settings


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_the_default_rate_limit_is_none_without_authentication(tmp_path: Path) -> None:
    plain = settings(tmp_path)

    assert plain.rate_limit == "auto"
    assert effective_rate_limit(plain) is None
    assert rate_limiter(plain) is None


def test_the_default_rate_limit_with_authentication_is_high_per_key(tmp_path: Path) -> None:
    keyed = settings(tmp_path, api_keys=["key-a"])

    assert effective_rate_limit(keyed) == AUTO_PER_KEY == "1000/second"
    limiter = rate_limiter(keyed)
    assert limiter is not None and str(limiter) == "1000 per 1 second"


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_off_is_no_rate_limit_even_with_authentication(tmp_path: Path, value: str) -> None:
    assert rate_limiter(settings(tmp_path, api_keys=["key-a"], rate_limit=value)) is None


def test_an_explicit_rate_limit_applies_with_or_without_authentication(tmp_path: Path) -> None:
    for values in ({}, {"api_keys": ["key-a"]}):
        limiter = rate_limiter(settings(tmp_path, rate_limit="120/minute", **values))
        assert limiter is not None and str(limiter) == "120 per 1 minute"


@pytest.mark.parametrize(
    ("errors", "sentence"),
    [
        (
            [
                {
                    "loc": ["body", "limits", "memory_bytes"],
                    "msg": "Input should be a valid integer",
                    "type": "int_type",
                }
            ],
            "Invalid body field 'limits.memory_bytes': Input should be a valid integer",
        ),
        (
            [
                {
                    "loc": ["query", "wait"],
                    "msg": "Input should be a finite number",
                    "type": "finite_number",
                }
            ]
            * 3,
            "Invalid query parameter 'wait': Input should be a finite number "
            "(and 2 more errors, listed in errors)",
        ),
        (
            [{"loc": ["body", 17], "msg": "JSON decode error", "type": "json_invalid"}],
            "Invalid request body: JSON decode error",
        ),
        (
            [{"loc": ["body"], "msg": "Field required", "type": "missing"}],
            "Invalid request body: Field required",
        ),
        ([], "Invalid request"),
    ],
)
def test_validation_errors_read_as_one_sentence(
    errors: list[dict[str, object]], sentence: str
) -> None:
    assert validation_sentence(errors) == sentence


@pytest.mark.parametrize(
    ("precise", "whole"),
    [(None, None), (0.0, 0), (0.49, 0), (0.5, 1), (1.5, 2), (2.5, 3), (1250.4, 1250)],
)
def test_execution_time_ms_is_whole_milliseconds_rounded_half_up(
    precise: float | None, whole: int | None
) -> None:
    assert whole_ms(precise) == whole
