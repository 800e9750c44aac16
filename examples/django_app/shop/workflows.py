"""The Nen workflow the shop runs for each order, and the parameters it takes."""

import os

from pydantic import BaseModel, Field

import nen_celery

CHECK_WORKFLOW_ID = os.environ.get("EXAMPLE_WORKFLOW_ID", "2b7d0c91-58a4-4f3e-9d6b-7c1e0f4a8b23")


class CheckParams(BaseModel):
    PATIENT_NAME: str = Field(min_length=1)
    DATE_OF_BIRTH: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


def register() -> None:
    """start_run then refuses bad parameters (nen_celery.InvalidParams) before anything is queued."""
    nen_celery.register_workflow(CHECK_WORKFLOW_ID, params=CheckParams)
