"""Benchmarks (`make bench`): our code against bare Celery / bare Starlette, in one run."""
