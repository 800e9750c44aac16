from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, Field

from nen_celery import InvalidParams, register_workflow, unregister_workflow
from nen_celery.domain.params import validate_params

WF = "12345678-1234-1234-1234-123456789abc"


class Params(BaseModel):
    PATIENT_NAME: str
    DATE_OF_BIRTH: str
    VISITS: int = 0


class Secure(BaseModel):
    password: str


@pytest.fixture
def registered() -> Iterator[None]:
    register_workflow(WF, params=Params, secure_params=Secure)
    yield
    unregister_workflow(WF)


def fields(exc: pytest.ExceptionInfo[InvalidParams]) -> list[str]:
    return [f for f, _ in exc.value.errors]


@pytest.mark.parametrize("bad", ["nope", "12345678123412341234123456789abc", 42, None, ""])
def test_workflow_id_must_be_a_hyphenated_uuid(bad: object) -> None:
    with pytest.raises(InvalidParams, match="workflow_id") as exc:
        validate_params(bad, {})
    assert isinstance(exc.value, ValueError)


def test_unregistered_workflow_gets_generic_checks() -> None:
    wid, params, secure = validate_params(WF.upper(), {"A": "x", "B": 1, "C": 1.5, "D": True})
    assert wid == WF
    assert params == {"A": "x", "B": 1, "C": 1.5, "D": True}
    assert secure is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"A": None}, "params.A"),
        ({"A": [1]}, "params.A"),
        ({"A": {"b": 1}}, "params.A"),
        ({"A": float("nan")}, "params.A"),
        ({1: "x"}, "params[1]"),
        ({"": "x"}, "params['']"),
        ("A=1", "params"),
    ],
)
def test_generic_checks_name_the_bad_field(params: object, field: str) -> None:
    with pytest.raises(InvalidParams) as exc:
        validate_params(WF, params)
    assert fields(exc) == [field]


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidParams) as exc:
        validate_params(WF, {"A": None, "B": [], "C": "ok"}, secure_params={"p": 5})
    assert fields(exc) == ["params.A", "params.B", "secure_params.p"]
    assert "params.A" in str(exc.value) and "secure_params.p" in str(exc.value)


def test_secure_params_must_be_strings_and_values_never_echoed() -> None:
    with pytest.raises(InvalidParams) as exc:
        validate_params(WF, {}, secure_params={"password": 123456789})
    assert "123456789" not in str(exc.value)


@pytest.mark.usefixtures("registered")
def test_registered_model_validates_and_dumps() -> None:
    _, params, secure = validate_params(
        WF, {"PATIENT_NAME": "Jane Doe", "DATE_OF_BIRTH": "1990-01-15"}, secure_params={"password": "s3"}
    )
    assert params == {"PATIENT_NAME": "Jane Doe", "DATE_OF_BIRTH": "1990-01-15", "VISITS": 0}
    assert secure == {"password": "s3"}


@pytest.mark.usefixtures("registered")
def test_registered_model_names_are_case_sensitive_and_extras_refused() -> None:
    with pytest.raises(InvalidParams) as exc:
        validate_params(
            WF, {"patient_name": "J", "DATE_OF_BIRTH": "x", "EXTRA": 1}, secure_params={"password": "s"}
        )
    assert fields(exc) == ["params.patient_name", "params.EXTRA"]


@pytest.mark.usefixtures("registered")
def test_registered_model_type_errors_and_missing_fields() -> None:
    with pytest.raises(InvalidParams) as exc:
        validate_params(WF, {"PATIENT_NAME": "J", "VISITS": "many"}, secure_params={"password": "s"})
    assert set(fields(exc)) == {"params.DATE_OF_BIRTH", "params.VISITS"}


@pytest.mark.usefixtures("registered")
def test_registered_secure_params_are_required() -> None:
    with pytest.raises(InvalidParams, match="password") as exc:
        validate_params(WF, {"PATIENT_NAME": "J", "DATE_OF_BIRTH": "x"})
    assert fields(exc) == ["secure_params"]


def test_model_with_alias_uses_the_alias() -> None:
    class Aliased(BaseModel):
        name: str = Field(alias="PATIENT_NAME")

    wid = str(uuid.uuid4())
    register_workflow(wid, params=Aliased)
    try:
        assert validate_params(wid, {"PATIENT_NAME": "J"})[1] == {"PATIENT_NAME": "J"}
        with pytest.raises(InvalidParams):
            validate_params(wid, {"name": "J"})
    finally:
        unregister_workflow(wid)


def test_register_workflow_rejects_non_models() -> None:
    with pytest.raises(TypeError, match="params"):
        register_workflow(WF, params=dict)  # type: ignore[arg-type]
    with pytest.raises(InvalidParams):
        register_workflow("not-a-uuid", params=Params)
