"""Quickstart: two agents share one memory through a memoryd daemon on its defaults.

Run the daemon (`memoryd serve`), then: python examples/quickstart.py
The client connects to $MEMORYD_ADDR (default 127.0.0.1:50051), with the token and TLS CA of
$MEMORYD_TOKEN_FILE and $MEMORYD_TLS_CA_FILE when set: what the chart gives agent containers.
"""

from memoryd_client import MemoryClient

with MemoryClient() as memory:
    memory.append("default", [{"role": "system", "content": "You are a terse support agent."}], key="conv-1")
    memory.append("default", [{"role": "user", "content": "My parcel is late."}], key="conv-1")
    memory.append("default", [{"role": "assistant", "content": "It ships tomorrow."}], key="conv-1")
    for m in memory.read("default", key="conv-1"):  # the CONTEXT view: fits the token budget
        print(f"{m.seq:>3} {m.token_count:>4} tok  {m.content}")
    stats = memory.stats("default", key="conv-1")
    print(f"{stats.message_count} messages, {stats.token_count}/{stats.budget_tokens} tokens ({stats.encoding})")
