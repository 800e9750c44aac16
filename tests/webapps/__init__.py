"""Test apps of the framework-adapter tests (tests/test_web_*.py), independent of examples/.

They are the old example apps, kept as nen's own fixtures: their callback tasks are registered
on the ready-made app ``nen_celery.worker:app`` (the suite's in-process worker), under the task
names the tests count ("django_example.run_finished", ...). Nothing here calls init_celery.
"""
