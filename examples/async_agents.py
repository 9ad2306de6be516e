"""Agent-scoped access with the asyncio client, against the example project.

    memoryd serve --config examples/project/memoryd.yaml
    python examples/async_agents.py

The client connects to $MEMORYD_ADDR (default 127.0.0.1:50051), as examples/quickstart.py.
"""

import asyncio

from memoryd_client import Agent, AsyncMemoryClient, PermissionDeniedError

CONTEXT = {"workflow": {"id": "wf-1", "input": {"conversationId": "c-42"}}, "user": {"id": "u-7"}}


async def main() -> None:
    async with AsyncMemoryClient() as memory:
        intake, resolution = Agent("intake-agent", CONTEXT), Agent("resolution-agent", CONTEXT)
        await memory.append("customer-support-context",
                            [{"role": "user", "content": "Router broken, SSN 123-45-6789"}], agent=intake)
        async for m in memory.read("customer-support-context", agent=resolution):
            print("resolution agent sees:", m.content)  # the SSN arrives redacted
        try:
            await memory.append("user-preferences", [{"role": "user", "content": "x"}], agent=intake)
        except PermissionDeniedError as err:
            print("read-only reference:", err.details)


asyncio.run(main())
