"""Clock-skew check: pure comparison, then against the simulator over real HTTP."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate

import httpx
import pytest

from nen_celery.checks.clock import check_clock, parse_http_date, skew_problem, skew_seconds
from nen_celery.settings import Settings
from tests.conftest import Stack
from tests.helpers import free_port

T0 = 1_730_319_600.0  # 2024-10-30T20:20:00Z
DATE = "Wed, 30 Oct 2024 20:20:00 GMT"


def test_parse_http_date() -> None:
    assert parse_http_date(DATE) == T0
    assert parse_http_date(formatdate(T0, usegmt=True)) == T0
    for bad in ("", "yesterday", "Wed, 30 Oct 2024 20:20:00"):
        with pytest.raises(ValueError, match="Date header"):
            parse_http_date(bad)


@pytest.mark.parametrize(
    ("sent", "received", "expected"),
    [
        (T0, T0 + 0.2, 0.0),  # same clock
        (T0 + 0.5, T0 + 0.9, 0.0),  # within the header's one-second truncation
        (T0 - 600, T0 - 599.8, 599.8),  # we are 10 minutes behind
        (T0 + 600, T0 + 600.1, -599.0),  # we are 10 minutes ahead
        (T0 - 30, T0 + 30, 0.0),  # a slow answer cannot prove any skew within its own duration
    ],
)
def test_skew_seconds(sent: float, received: float, expected: float) -> None:
    assert skew_seconds(DATE, sent, received) == pytest.approx(expected)


def test_skew_problem_names_direction_and_severity() -> None:
    assert skew_problem(59.0, 60.0) is None
    assert skew_problem(-60.0, 60.0) is None
    behind = skew_problem(90.0, 60.0) or ""
    assert "90s behind" in behind and "NEN_CLOCK_SKEW_MAX=60s" in behind and "close to" in behind
    ahead = skew_problem(-400.0, 60.0) or ""
    assert "400s ahead of" in ahead and "refuses every signed request" in ahead


def sim_settings(stack: Stack, **values: object) -> Settings:
    return Settings(api_url=stack.sim.url, **values)  # type: ignore[arg-type]


@pytest.mark.integration
def test_check_clock_against_the_simulator(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nen_celery.checks.clock")
    skew = check_clock(sim_settings(stack))
    assert skew is not None and abs(skew) <= 1.0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    behind = check_clock(sim_settings(stack), clock=lambda: time.time() - 600)
    assert behind is not None and 595 <= behind <= 601
    ahead = check_clock(sim_settings(stack, clock_skew_max=30), clock=lambda: time.time() + 45)
    assert ahead is not None and -46 <= ahead <= -40
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "behind" in warnings[0] and "refuses every signed request" in warnings[0]
    assert "ahead of" in warnings[1] and "NEN_CLOCK_SKEW_MAX=30s" in warnings[1]


def test_unreachable_or_dateless_api_is_skipped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nen_celery.checks.clock")
    dead = Settings(api_url=f"http://127.0.0.1:{free_port()}", connect_timeout=1)
    assert check_clock(dead) is None
    assert "skipped: ConnectError" in caplog.text

    def answer(headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(404, headers=headers)))

    settings = Settings(api_url="https://api.example")
    assert check_clock(settings, answer({})) is None
    assert "without a Date header" in caplog.text
    assert check_clock(settings, answer({"date": "garbage"})) is None
    assert "skipped: ValueError" in caplog.text
