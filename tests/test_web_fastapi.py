"""FastAPI: the receiver's router through FastAPI's TestClient and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nen_celery.web.fastapi import create_router
from tests.conftest import Stack, env
from tests.helpers import serve_in_thread, wait_for
from tests.web_support import (
    WEBHOOK,
    Reply,
    assert_refused_and_nothing_changed,
    drive_run,
    published,
)

pytestmark = pytest.mark.integration

PREFIX = "/nen"


@pytest.fixture
def client() -> Iterator[TestClient]:
    from tests.webapps.fastapi_site import app

    with TestClient(app) as test_client:
        yield test_client


def post_with(client: TestClient) -> Any:
    def post(path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.post(path, content=body, headers=headers)
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return Reply(response.status_code, response.json() if is_json else None)

    return post


def test_signed_webhooks_through_the_router_end_the_run_with_one_callback(
    quiet_sim: Stack, client: TestClient
) -> None:
    # terminal, then a stale processing, then a duplicate terminal
    tags, run = drive_run(
        quiet_sim, post_with(client), PREFIX + WEBHOOK, ["success", "processing", "success"]
    )
    assert tags == ["complete"]
    assert [h["status"] for h in run.history] == ["queued", "submitted", "success"]


def test_unsigned_forged_oversize_and_wrong_type_are_refused_and_change_nothing(
    stack: Stack, client: TestClient
) -> None:
    assert_refused_and_nothing_changed(stack, post_with(client), PREFIX)


def test_router_under_any_prefix_and_kept_out_of_the_openapi_schema() -> None:
    app = FastAPI()
    app.include_router(create_router(), prefix="/hooks/v1")
    with TestClient(app) as client:
        assert client.get("/hooks/v1/healthz").json() == {"status": "ok"}
        assert client.get("/hooks/v1" + WEBHOOK).status_code == 405
        paths = client.get("/openapi.json").json().get("paths", {})
    assert not [p for p in paths if "webhooks" in p or "healthz" in p]


def recording(app: Any, seen: list[tuple[str, int]]) -> Any:
    """The ASGI app, noting (path, status) of every HTTP response."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def noting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen.append((scope["path"], message["status"]))
            await send(message)

        await app(scope, receive, noting)

    return wrapped


def test_example_start_endpoint_starts_a_run_and_the_status_endpoint_shows_it_finishing(
    stack: Stack, client: TestClient
) -> None:
    from tests.webapps.fastapi_site import app

    seen: list[tuple[str, int]] = []
    finished_before = stack.counter.finished["fastapi_example.run_finished"]
    with serve_in_thread(recording(app, seen)) as url, env(NEN_WEBHOOK_URL=url + PREFIX + WEBHOOK):
        response = client.post("/runs", json={"name": "Jane Doe", "dob": "1990-01-15"})
        assert response.status_code == 202
        status_url = response.json()["status_url"]
        final = wait_for(
            lambda: (r := client.get(status_url).json())["callback"] == "sent" and r,
            20,
            "the status endpoint to show the run finished",
        )
        assert final == {
            "run_id": response.json()["run_id"],
            "status": "success",
            "finished": True,
            "callback": "sent",
        }
        wait_for(
            lambda: stack.counter.finished["fastapi_example.run_finished"] == finished_before + 1,
            20,
            "callback",
        )
        stack.counter.wait_idle()
    assert seen.count((PREFIX + WEBHOOK, 200)) == 2  # processing and success, over HTTP into the router
    sent = published(stack)
    bad = client.post("/runs", json={"name": "", "dob": "1990-01-15"})
    assert bad.status_code == 400 and list(bad.json()["detail"]["fields"]) == ["params.PATIENT_NAME"]
    assert client.post("/runs", json={"name": "Jane"}).status_code == 422  # FastAPI's own validation
    assert published(stack) == sent
    assert client.get("/runs/no-such-run").status_code == 404
