"""Error answers in Nen's shape, one place for the API routes, the control routes and the faults."""

from __future__ import annotations

from http import HTTPStatus

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error answer in Nen's shape: ``{"error": <code>, "message": <detail>}``."""

    def __init__(self, status_code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message

    def response(self) -> JSONResponse:
        return error_response(self.status_code, self.error, self.message)


def error_response(status_code: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status_code)


def reason_code(status: int) -> str:
    """``service_unavailable`` for 503: the snake_cased reason phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return phrase.lower().replace(" ", "_").replace("-", "_")
