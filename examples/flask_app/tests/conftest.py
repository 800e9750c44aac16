"""The Flask recipe of docs/testing.md: the app factory builds the app once, and the plugin's worker
runs the Celery app the factory made (``nen_celery_app``)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_example import create_app


@pytest.fixture(scope="session")
def flask_app(nen_redis_url: str) -> Flask:
    app = create_app()
    app.config.update(ORDERS_REDIS_URL=nen_redis_url, ORDERS_KEY_PREFIX="shop-tests:")
    return app


@pytest.fixture(scope="session")
def nen_celery_app(flask_app: Flask) -> Any:
    return flask_app.extensions["celery"]


@pytest.fixture
def client(flask_app: Flask) -> FlaskClient:
    return flask_app.test_client()
