"""The shop's orders, kept in Redis (a database table in a bigger app)."""

from __future__ import annotations

import redis
from flask import current_app, g


def db() -> redis.Redis:
    if "orders_db" not in g:
        g.orders_db = redis.Redis.from_url(current_app.config["ORDERS_REDIS_URL"], decode_responses=True)
    return g.orders_db


def key(*parts: object) -> str:
    return current_app.config["ORDERS_KEY_PREFIX"] + ":".join(str(p) for p in parts)


def create(name: str, dob: str, email: str) -> int:
    order_id = int(db().incr(key("order_ids")))
    db().hset(
        key("order", order_id), mapping={"name": name, "dob": dob, "email": email, "status": "checking"}
    )
    return order_id


def get(order_id: int) -> dict[str, str]:
    return db().hgetall(key("order", order_id))


def delete(order_id: int) -> None:
    db().delete(key("order", order_id))


def update(order_id: int, **fields: str) -> None:
    db().hset(key("order", order_id), mapping=fields)


def count_callback(order_id: int) -> None:
    db().hincrby(key("order", order_id), "callbacks", 1)
