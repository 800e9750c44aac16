"""Webhook receivers: ASGI (Starlette) now; Flask and Django adapters build on ``receive``."""
