"""The README stays true: every setting documented, exactly the two set-up commands named."""

from __future__ import annotations

import re
from pathlib import Path

from nen_celery.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_reference() -> None:
    """The README shows the settings most deployments set and links to the reference, which
    names every one (its rows are held to Settings by test_docs_true.py)."""
    reference = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    names = [f"NEN_{name.upper()}" for name in Settings.model_fields]
    missing = [name for name in names if name not in reference]
    assert missing == []
    assert "(docs/configuration.md)" in README


def test_readme_names_the_two_setup_commands() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make \w+", setup, flags=re.M) == ["make demo", "make test"]
