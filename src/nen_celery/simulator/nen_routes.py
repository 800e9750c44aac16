"""The endpoints of the Nen API itself: ``POST /runs``, ``GET /runs/{id}``, ``/healthz``, and the
``GET /runs?idempotency_key=`` lookup Nen does not document (off unless configured).

Faults are applied here, in the order a real failure would happen: a planned error before the body
is read, latency after the run exists, a dropped or garbled answer after it was accepted.
"""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

from nen_celery.simulator.connection import NoResponse, discard_body, drop_connection, read_body
from nen_celery.simulator.errors import ApiError, error_response
from nen_celery.simulator.faults import bad_accept_response, gateway_error_response, planned_error_response
from nen_celery.simulator.log import logger
from nen_celery.simulator.runs import NO_IDEMPOTENCY_KEY, Run, RunRequest, accepted_body
from nen_celery.simulator.state import SimulatorState
from nen_celery.simulator.validation import (
    check_api_key,
    check_signature,
    parse_json_object,
    validate_run_body,
)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class NenApi:
    """The Nen API's handlers over one ``SimulatorState`` and its (live, mutable) config."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.config = state.config

    def routes(self) -> list[Route]:
        return [
            Route("/runs", self.post_run, methods=["POST"]),
            Route("/runs", self.lookup_run, methods=["GET"]),
            Route("/runs/{message_id}", self.get_run, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        """The 401 for a missing or wrong x-api-key; None when the key is right."""
        try:
            check_api_key(request.headers, self.config)
        except ApiError as exc:
            return exc.response()
        return None

    async def post_run(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        idempotency_key = request.headers.get("idempotency-key", NO_IDEMPOTENCY_KEY)
        self.state.record_post(idempotency_key)
        response = await self._answer_post(request, idempotency_key)
        # Injected latency comes after the work: the run already exists while the client waits.
        await self.state.pause(self.config.post_latency, request)
        if response is None:
            await drop_connection(request)
            return NoResponse()
        return response

    async def _answer_post(self, request: Request, idempotency_key: str) -> Response | None:
        """The answer to an authenticated POST /runs; None: drop the connection instead."""
        planned = self.state.faults.take_post_error()
        if planned is not None:
            await discard_body(request)
            logger.info("injected error %d on POST /runs", planned.status)
            return planned_error_response(planned)
        try:
            run_request = await self._run_request(request)
        except ApiError as exc:
            return exc.response()
        run = self._replayed_run(idempotency_key)
        if run is None:
            run = self.state.accept(run_request, idempotency_key)
        return self._accepting_answer(run)

    async def _run_request(self, request: Request) -> RunRequest:
        """The checked POST /runs body; ApiError for a bad body or signature, or an unknown workflow."""
        raw = await read_body(request, self.config.max_body_bytes)
        run_request = validate_run_body(parse_json_object(raw), self.config)
        check_signature(request.headers, raw, run_request, self.config)
        if run_request.workflow_id in self.config.unknown_workflows:
            raise ApiError(404, "workflow_not_found", f"workflow {run_request.workflow_id} does not exist")
        return run_request

    def _replayed_run(self, idempotency_key: str) -> Run | None:
        """The run an earlier POST with this Idempotency-Key created, if ``honour_idempotency_key``."""
        if not self.config.honour_idempotency_key or idempotency_key == NO_IDEMPOTENCY_KEY:
            return None
        run = self.state.run_for_key(idempotency_key)
        if run is not None:
            self.state.record_replay()
            logger.info("idempotent replay of message=%s", run.message_id)
        return run

    def _accepting_answer(self, run: Run) -> Response | None:
        """The 202 for ``run``, unless a fault replaces it; None: drop the connection instead."""
        faults = self.state.faults
        if faults.take_drop():
            logger.info("dropping the connection after accepting message=%s", run.message_id)
            return None
        gateway = faults.take_error_after_accept()
        if gateway is not None:
            logger.info("answering %d after accepting message=%s", gateway, run.message_id)
            return gateway_error_response(gateway)
        if faults.take_bad_body():
            return bad_accept_response()
        return JSONResponse(accepted_body(run), status_code=202)

    async def get_run(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        message_id = str(request.path_params["message_id"])
        payload = self.state.run_payload(message_id)
        await self.state.pause(self.config.get_latency, request)
        if payload is None:
            return error_response(404, "run_not_found", f"no run with messageId {message_id}")
        return JSONResponse(payload)

    async def lookup_run(self, request: Request) -> Response:
        if not self.config.lookup_by_idempotency_key:
            raise HTTPException(405, headers={"Allow": "POST"})  # exactly what it was without the route
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        key = request.query_params.get("idempotency_key")
        if not key:
            return error_response(400, "invalid_request", "idempotency_key query parameter is required")
        run = self.state.run_for_key(key)
        payload = self.state.run_payload(run.message_id) if run is not None else None
        await self.state.pause(self.config.get_latency, request)
        if payload is None:
            return error_response(404, "run_not_found", "no run was created with that Idempotency-Key")
        return JSONResponse(payload)
