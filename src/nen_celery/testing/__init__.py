"""nen-celery's pytest plugin for users' own tests (the ``[testing]`` extra, docs/testing.md).

Registered through the ``pytest11`` entry point: it must stay cheap to import and add nothing to a
test session that does not ask for its fixtures.
"""
