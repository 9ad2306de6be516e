"""The floor of the daemon benchmark: a bare grpc.aio unary server doing one EVALSHA.

Each call runs memoryd's own append script (``memoryd.store.redis.scripts.APPEND``,
the Redis side of an append: idempotency record, XADD, counters, TTL on the instance's
keys) once, through redis-py asyncio with hiredis, on keys sharing one hash tag. The
request is the raw message bytes; the arguments are what memoryd would send for one
message, with a fresh idempotency field and id per call. So the floor pays exactly one
gRPC round trip and one Redis round trip of the same Redis work, nothing else: no
protobuf, no validation, no token counting.

``--simple`` runs the smaller stand-in script this floor used before (XADD, three
HINCRBY, two PEXPIRE), for comparison with older numbers.

    python bench/floor_server.py LISTEN REDIS_URL [--simple]   (prints "ready" when serving)
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import grpc
import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.redis.scripts import APPEND

SIMPLE_SCRIPT = """
local seq = redis.call('HINCRBY', KEYS[2], 'last_seq', 1)
redis.call('XADD', KEYS[1], seq .. '-0', 'm', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HINCRBY', KEYS[2], 'tokens', 10)
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return seq
"""
# The data keys every mutation script takes, in their order (layout.InstanceKeys.data), so the
# floor's script call stays the store's as keys are added.
KEYS = list(InstanceKeys("floor:v1:{0123456789abcdef}:bench:archive").data)


def append_args(n: int, content: bytes) -> list[object]:
    """The APPEND script's ARGV for one 100-token user message, as the store sends it
    (tests/store/test_redis_layout.py runs it against the script, so the floor follows the
    store's layout): ttl, pinned cap, idempotency field, window, record tail, n, batch digest
    ("": an internal retry key), then one message (tokens, effective priority, id, role,
    content, content type, priority, metadata, extensions), then no answered call ids and no
    new calls (codec.call_args)."""
    mid = f"f{n:015x}"
    return [-1, -1, f"s:{n}", 60_000, f'[["{mid}",100,5]]', 1, "",
            100, 5, mid, "user", content, "text", "", "", "", 0, 0]


async def main(listen: str, redis_url: str, simple: bool) -> None:
    client = aredis.Redis.from_url(redis_url)
    calls = itertools.count()
    if simple:
        script = client.register_script(SIMPLE_SCRIPT)

        async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            seq = await script(keys=KEYS[:2], args=[request])
            return str(seq).encode()
    else:
        script = client.register_script(APPEND)

        async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            reply = await script(keys=KEYS, args=append_args(next(calls), request))
            return str(reply[1]).encode()

    handler = grpc.method_handlers_generic_handler(
        "floor.Floor", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(listen)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--simple" in sys.argv[3:]))
