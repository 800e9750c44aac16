"""Flask: the extension's webhook route through Flask's test client and a real WSGI server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from nen_celery import get_run
from nen_celery.errors import ConfigurationError
from nen_celery.settings import get_settings
from nen_celery.web.flask import NenCelery, blueprint
from tests.conftest import Stack, env
from tests.helpers import wait_for
from tests.web_support import (
    LIMIT,
    WEBHOOK,
    CountingStream,
    Reply,
    assert_refused_and_nothing_changed,
    drive_run,
    overrides_restored,
    published,
    recording,
    serve_wsgi,
    signed,
    webhook_body,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def example() -> Iterator[Flask]:
    from tests.webapps.flask_site import create_app

    with overrides_restored():
        yield create_app()


def post_with(client: Any) -> Any:
    def post(path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.post(path, data=body, headers=headers)
        return Reply(response.status_code, response.get_json(silent=True))

    return post


def test_signed_webhooks_through_the_flask_route_end_the_run_with_one_callback(
    quiet_sim: Stack, example: Flask
) -> None:
    tags, run = drive_run(
        quiet_sim, post_with(example.test_client()), WEBHOOK, ["processing", "failed", "failed"]
    )
    assert tags == ["failure"]
    assert run.status == "failed"


def test_unsigned_forged_oversize_and_wrong_type_are_refused_and_change_nothing(
    stack: Stack, example: Flask
) -> None:
    assert_refused_and_nothing_changed(stack, post_with(example.test_client()))


def test_undeclared_oversize_body_is_refused_after_reading_just_past_the_limit(
    stack: Stack, example: Flask
) -> None:
    stream = CountingStream(16 * LIMIT)
    sent = published(stack)
    response = example.test_client().post(
        WEBHOOK,
        input_stream=stream,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},  # no length
    )
    assert response.status_code == 413
    assert response.get_json() == {"error": "body_too_large", "message": f"limit is {LIMIT} bytes"}
    assert LIMIT < stream.consumed <= 2 * LIMIT  # stopped just past the limit, not at 16 MiB
    assert published(stack) == sent


def test_get_and_healthz(example: Flask) -> None:
    client = example.test_client()
    assert client.get(WEBHOOK).status_code == 405
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_init_app_pattern_with_prefix_and_settings_from_app_config(stack: Stack) -> None:
    nen = NenCelery(url_prefix="/hooks")
    app = Flask("factory")
    app.config.update(NEN_WEBHOOK_SECRET="flask-only-secret", NEN_WEBHOOK_MAX_BODY=4096)
    with overrides_restored():
        nen.init_app(app)
        assert app.extensions["nen_celery"] is nen
        assert get_settings().webhook_max_body == 4096
        post = post_with(app.test_client())
        body = webhook_body(f"flask-{uuid.uuid4()}")
        assert post("/hooks" + WEBHOOK, body, signed(body)).status == 401  # the environment's secret
        assert post("/hooks" + WEBHOOK, body, signed(body, "flask-only-secret")) == Reply(
            202, {"status": "parked"}
        )
        big = b"{" * 4097
        assert post("/hooks" + WEBHOOK, big, signed(big, "flask-only-secret")).status == 413
        assert app.test_client().post(WEBHOOK, data=body, headers=signed(body)).status_code == 404
    assert get_settings().webhook_max_body == LIMIT
    stack.counter.wait_idle()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"NEN_WEBHOOK_SECRETS": "x"}, "NEN_WEBHOOK_SECRETS"),
        ({"NEN_WEBHOOK_MAX_BODY": 0}, "NEN_WEBHOOK_MAX_BODY: "),
        ({"NEN_WEBHOOK_URL": "ftp://example"}, "NEN_WEBHOOK_URL"),
    ],
)
def test_bad_nen_config_key_names_the_problem_and_changes_nothing(config: dict[str, Any], named: str) -> None:
    app = Flask("bad")
    app.config.update(config)
    before = get_settings()
    with overrides_restored(), pytest.raises(ConfigurationError, match=re.escape(named)):
        NenCelery(app)
    assert get_settings() == before
    assert "nen_celery" not in app.extensions and not app.blueprints


def test_route_is_exempted_from_flask_wtf_csrf_when_installed() -> None:
    class CSRFProtect:  # the part of Flask-WTF's CSRFProtect the extension uses
        def __init__(self) -> None:
            self.exempted: list[Any] = []

        def exempt(self, view: Any) -> Any:
            self.exempted.append(view)
            return view

    app = Flask("csrf")
    csrf = app.extensions["csrf"] = CSRFProtect()
    with overrides_restored():
        NenCelery(app)
    assert csrf.exempted == [blueprint]


def test_example_start_view_starts_a_run_and_the_status_page_shows_it_finishing(
    stack: Stack, example: Flask
) -> None:
    seen: list[tuple[str, int]] = []
    client = example.test_client()
    finished_before = stack.counter.finished["flask_example.run_finished"]
    with serve_wsgi(recording(example, seen)) as url, env(NEN_WEBHOOK_URL=url + WEBHOOK):
        response = client.post("/runs", data={"name": "Jane Doe", "dob": "1990-01-15"})
        assert response.status_code == 303
        page_url = response.headers["Location"]
        page = wait_for(
            lambda: (
                (text := client.get(page_url).get_data(as_text=True))
                and 'id="callback">sent' in text
                and text
            ),
            20,
            "the status page to show the run finished",
        )
        assert 'id="status">success</strong>' in page
        wait_for(
            lambda: stack.counter.finished["flask_example.run_finished"] == finished_before + 1,
            20,
            "callback",
        )
        stack.counter.wait_idle()
    run = get_run(page_url.rsplit("/", 1)[-1])
    assert run is not None and run.history[-1]["source"] == "webhook"
    assert seen.count((WEBHOOK, 200)) == 2  # processing and success, over HTTP into the Flask route
    sent = published(stack)
    bad = client.post("/runs", data={"name": "Jane", "dob": "yesterday"})
    assert bad.status_code == 400 and list(bad.get_json()["fields"]) == ["params.DATE_OF_BIRTH"]
    assert published(stack) == sent
    assert client.get("/runs/no-such-run").status_code == 404
