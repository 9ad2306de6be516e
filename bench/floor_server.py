"""The floor of the daemon benchmark: a bare grpc.aio unary server doing one EVALSHA.

Each call runs one Lua script equivalent to memoryd's append (XADD + counters +
PEXPIRE on keys sharing a hash tag) through redis-py asyncio with hiredis, so the
floor pays exactly one gRPC round trip and one Redis round trip, nothing else.

    python bench/floor_server.py LISTEN REDIS_URL   (prints "ready" when serving)
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import redis.asyncio as aredis

SCRIPT = """
local seq = redis.call('HINCRBY', KEYS[2], 'last_seq', 1)
redis.call('XADD', KEYS[1], seq .. '-0', 'm', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HINCRBY', KEYS[2], 'tokens', 10)
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return seq
"""


async def main(listen: str, redis_url: str) -> None:
    client = aredis.Redis.from_url(redis_url)
    script = client.register_script(SCRIPT)

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seq = await script(keys=["floor:{i}:s", "floor:{i}:m"], args=[request])
        return str(seq).encode()

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
    asyncio.run(main(sys.argv[1], sys.argv[2]))
