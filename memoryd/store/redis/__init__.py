"""The Redis backend: Lua scripts over one hash tag per instance (docs/redis.md)."""

from memoryd.store.redis.connection import ConnectionSettings
from memoryd.store.redis.store import RedisStore

__all__ = ["ConnectionSettings", "RedisStore"]
