"""The Nen workflow the shop runs for each order, and the parameters it takes."""

import os

from pydantic import BaseModel, Field

import nen_celery

CHECK_WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "6f1c2a57-3b9e-4d1a-8c55-0a7e9b2d4f10")


class CheckParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


def register() -> None:
    """start_run then refuses bad parameters (nen_celery.InvalidParams) before anything is queued."""
    nen_celery.register_workflow(CHECK_WORKFLOW_ID, params=CheckParams)
