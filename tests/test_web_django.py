"""Django: the webhook view through Django's test client and a real WSGI server, real Redis and broker."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nen_celery import get_run
from nen_celery.settings import get_settings
from tests.conftest import Stack
from tests.helpers import wait_for
from tests.web_support import (
    LIMIT,
    WEBHOOK,
    CountingStream,
    Reply,
    assert_refused_and_nothing_changed,
    django_ready,
    drive_run,
    published,
    recording,
    serve_wsgi,
    signed,
    webhook_body,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_ready")]
__all__ = ["django_ready"]  # the fixture, imported for pytest

PREFIX = "/nen"


@pytest.fixture
def client() -> Any:
    from django.test import Client

    return Client()


def post_with(client: Any) -> Any:
    def post(path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.generic("POST", path, body, headers=headers)
        is_json = response["Content-Type"].startswith("application/json")
        return Reply(response.status_code, json.loads(response.content) if is_json else None)

    return post


def test_signed_webhooks_through_the_django_view_end_the_run_with_one_callback(
    quiet_sim: Stack, client: Any
) -> None:
    # processing, then the terminal webhook three times (Nen retrying)
    tags, run = drive_run(quiet_sim, post_with(client), PREFIX + WEBHOOK, ["processing"] + ["success"] * 3)
    assert tags == ["complete"]
    assert run.status == "success"
    assert [h["status"] for h in run.history] == ["queued", "submitted", "processing", "success"]


def test_unsigned_forged_oversize_and_wrong_type_are_refused_and_change_nothing(
    stack: Stack, client: Any
) -> None:
    assert_refused_and_nothing_changed(stack, post_with(client), PREFIX)


def test_webhook_is_csrf_exempt_while_the_app_enforces_csrf(stack: Stack) -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    body = webhook_body(f"csrf-{uuid.uuid4()}")
    assert strict.post(PREFIX + WEBHOOK, body, content_type="application/json").status_code == 401
    assert strict.post(
        PREFIX + WEBHOOK, body, content_type="application/json", headers=signed(body)
    ).json() == {"status": "parked"}
    assert strict.post("/runs/", {"name": "Jane", "dob": "1990-01-15"}).status_code == 403  # CSRF is on
    stack.counter.wait_idle()


def test_declared_oversize_body_is_refused_without_reading_it(stack: Stack, client: Any) -> None:
    stream = CountingStream(8 * LIMIT)
    sent = published(stack)
    response = client.generic(
        "POST",
        PREFIX + WEBHOOK,
        b"",
        headers={"Content-Type": "application/json"},
        CONTENT_LENGTH=str(8 * LIMIT),
        **{"wsgi.input": stream},
    )
    assert response.status_code == 413
    assert response.json() == {"error": "body_too_large", "message": f"limit is {LIMIT} bytes"}
    assert stream.consumed == 0
    assert published(stack) == sent


def test_get_and_healthz(client: Any) -> None:
    assert client.get(PREFIX + WEBHOOK).status_code == 405
    assert client.get(PREFIX + "/healthz").json() == {"status": "ok"}
    assert client.post(PREFIX + "/healthz").status_code == 405


def test_settings_come_from_django_settings_before_the_environment(stack: Stack, client: Any) -> None:
    from django.test import override_settings

    env_secret_body = webhook_body(f"settings-{uuid.uuid4()}")
    with override_settings(NEN_CELERY={"NEN_WEBHOOK_SECRET": "django-only-secret", "webhook_max_body": 4096}):
        assert get_settings().webhook_max_body == 4096
        post = post_with(client)
        assert post(PREFIX + WEBHOOK, env_secret_body, signed(env_secret_body)).status == 401
        reply = post(PREFIX + WEBHOOK, env_secret_body, signed(env_secret_body, "django-only-secret"))
        assert reply == Reply(202, {"status": "parked"})
        big = b"{" * 4097
        assert post(PREFIX + WEBHOOK, big, signed(big, "django-only-secret")).status == 413
    # back to the project's settings: the environment's secret again
    assert get_settings().webhook_max_body == LIMIT
    assert post_with(client)(PREFIX + WEBHOOK, env_secret_body, signed(env_secret_body)).status == 202
    stack.counter.wait_idle()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"WEBHOOK_SECRETS": "x"}, "WEBHOOK_SECRETS"),
        ({"WEBHOOK_MAX_BODY": -1}, "NEN_WEBHOOK_MAX_BODY: "),
        ({"API_URL": "ftp://nen"}, "NEN_API_URL"),
        (["WEBHOOK_SECRET"], "must be a dict"),
    ],
)
def test_bad_nen_celery_setting_names_the_problem_and_changes_nothing(value: Any, named: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    before = get_settings()
    with pytest.raises(ImproperlyConfigured, match=re.escape(named)), override_settings(NEN_CELERY=value):
        pass
    assert get_settings() == before


@pytest.fixture
def served_example(stack: Stack) -> Iterator[list[tuple[str, int]]]:
    """The example project over real HTTP, given to Nen (the simulator) as the webhook URL."""
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    seen: list[tuple[str, int]] = []
    with serve_wsgi(recording(get_wsgi_application(), seen)) as url:
        with override_settings(NEN_CELERY={"WEBHOOK_URL": url + PREFIX + WEBHOOK}):
            yield seen
        stack.counter.wait_idle()


def test_example_start_view_starts_a_run_and_the_status_page_shows_it_finishing(
    stack: Stack, served_example: list[tuple[str, int]], client: Any
) -> None:
    finished_before = stack.counter.finished["django_example.run_finished"]
    response = client.post("/runs/", {"name": "Jane Doe", "dob": "1990-01-15"})
    assert response.status_code == 303
    page_url = response["Location"]
    run_id = page_url.rstrip("/").rsplit("/", 1)[-1]
    page = wait_for(
        lambda: (text := client.get(page_url).content.decode()) and 'id="callback">sent' in text and text,
        20,
        "the status page to show the run finished",
    )
    assert 'id="status">success</strong>' in page and run_id in page
    wait_for(
        lambda: stack.counter.finished["django_example.run_finished"] == finished_before + 1, 20, "callback"
    )
    run = get_run(run_id)
    assert run is not None and run.params == {"PATIENT_NAME": "Jane Doe", "DATE_OF_BIRTH": "1990-01-15"}
    assert [h["source"] for h in run.history][-1] == "webhook"  # ended by Nen's webhook, not a poll
    # Nen's webhooks (processing, success) came in through the project's own URL over HTTP
    assert served_example.count((PREFIX + WEBHOOK, 200)) == 2
    # invalid input: a clear 400 naming the fields, nothing started
    sent = published(stack)
    bad = client.post("/runs/", {"name": "", "dob": "15/01/1990"})
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {
        "params.PATIENT_NAME",
        "params.DATE_OF_BIRTH",
    }
    assert published(stack) == sent
    assert client.get("/runs/no-such-run/").status_code == 404
