"""Backoff policies and the retry deadline: pure functions, checked exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from scalr_queue import ConfigError
from scalr_queue.config import load_settings
from scalr_queue.retries import Backoff, parse_backoff_setting, retry_deadline_ms


def test_exponential_doubles_from_two_seconds_with_jitter_and_cap() -> None:
    """2, 4, 8, 16 s ... each within +-20 %, never above the cap."""
    backoff = Backoff.parse("exponential", cap_s=30)
    rng = random.Random(7)
    for failed_try, nominal in [(1, 2), (2, 4), (3, 8), (4, 16)]:
        delays = [backoff.delay_s(failed_try, rng=rng) for _ in range(200)]
        assert nominal * 0.8 <= min(delays) <= max(delays) <= nominal * 1.2
        assert max(delays) - min(delays) > nominal * 0.2  # there is jitter
    assert all(backoff.delay_s(10, rng=rng) <= 30 for _ in range(100))


def test_fixed_and_list_backoff() -> None:
    """A number is the same delay each time; a list gives one per try and repeats its last value."""
    assert [Backoff.parse(5).delay_s(n) for n in (1, 2, 9)] == [5, 5, 5]
    assert [Backoff.parse(timedelta(seconds=1.5)).delay_s(1)] == [1.5]
    steps = Backoff.parse([1, 5, 30])
    assert [steps.delay_s(n) for n in (1, 2, 3, 4, 10)] == [1, 5, 30, 30, 30]


def test_bad_backoff_is_refused() -> None:
    """Negative delays, empty lists and unknown words are errors, not silent defaults."""
    for bad in (-1, [], [1, -2], "linear"):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is checked below for the setting
            Backoff.parse(bad)  # type: ignore[arg-type]


def test_backoff_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALR_QUEUE_BACKOFF takes exponential, a number or a list; anything else names the variable."""
    assert parse_backoff_setting("1,5,30") == Backoff.parse([1, 5, 30])
    assert parse_backoff_setting(" 7 ") == Backoff.parse(7)
    monkeypatch.setenv("SCALR_QUEUE_BACKOFF", "sometimes")
    with pytest.raises(ConfigError, match="SCALR_QUEUE_BACKOFF='sometimes' is not valid: use 'exponential'"):
        load_settings()
    monkeypatch.setenv("SCALR_QUEUE_BACKOFF", "3")
    monkeypatch.setenv("SCALR_QUEUE_BACKOFF_MAX", "60")
    assert load_settings().default_backoff == Backoff("fixed", (3.0,), 60.0)


def test_retry_deadline() -> None:
    """retry_until is a moment, or a duration counted from the first enqueue."""
    assert retry_deadline_ms(None, 1_000) is None
    assert retry_deadline_ms(timedelta(minutes=1), 1_000) == 61_000
    assert retry_deadline_ms(30, 1_000) == 31_000
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_deadline_ms(moment, 1_000) == int(moment.timestamp() * 1000)
