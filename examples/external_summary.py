"""An agent that summarises its own memory with its own model (PlanFlush / ApplyFlush).

The daemon says what a fold would take out of the live context; the agent's model writes the
summary; the daemon folds exactly those messages under it -- unless another fold happened
meanwhile (AbortedError: plan again). Messages appended while the model writes stay live.

Run the daemon (`memoryd serve`), then: python examples/external_summary.py
With OPENAI_API_KEY set and the `openai` package installed, gpt-4o-mini writes the summary;
otherwise a deterministic function stands in for the model (as in the tests).
"""

from __future__ import annotations

import os

from memoryd_client import AbortedError, MemoryClient, pb

MEMORY, KEY = "default", "external-summary-demo"


def summarise(current: str, messages: list[pb.Message], max_tokens: int) -> str:
    """The agent's model call: the previous summary plus the folded messages, in few words."""
    transcript = "\n".join(f"#{m.seq} {pb.Role.Name(m.role)[5:].lower()}: {m.content}" for m in messages)
    if os.environ.get("OPENAI_API_KEY"):
        try:
            from openai import OpenAI  # the agent's own model client
        except ImportError:
            pass
        else:
            reply = OpenAI().chat.completions.create(
                model="gpt-4o-mini", max_tokens=max_tokens // 2,  # room for the tokenizer's differences
                messages=[{"role": "system", "content": "Summarise this conversation; keep every fact."},
                          {"role": "user", "content": f"Earlier summary:\n{current}\n\nNew messages:\n{transcript}"}],
            )
            return reply.choices[0].message.content or ""
    facts = [f"{pb.Role.Name(m.role)[5:].lower()} #{m.seq}: {m.content[:60]}" for m in messages]
    return "\n".join(filter(None, [current, *facts]))[: max_tokens * 3]  # ~3+ characters per token


def fold(memory: MemoryClient) -> pb.ApplyFlushResponse | None:
    """Plan, let the model write, apply; plan again when someone else folded first."""
    for _attempt in range(3):
        plan = memory.plan_flush(MEMORY, key=KEY)
        if not plan.seqs:
            return None  # nothing to fold
        text = summarise(plan.current_summary, list(plan.messages), plan.summary_max_tokens)
        memory.append(MEMORY, [{"role": "user", "content": "(typed while the model was writing)"}], key=KEY)
        try:
            return memory.apply_flush(MEMORY, plan.plan_token, text, key=KEY)
        except AbortedError:
            continue  # another fold (or a Clear) came first: the plan is stale
    return None


with MemoryClient() as memory:
    memory.clear(MEMORY, key=KEY)
    turns = ["My order A-4821 has not arrived.", "Sorry! It left the warehouse on 2 March.",
             "Can you send it to 12 Baker Street instead?", "Done: the address is now 12 Baker Street.",
             "Thanks. Also, refund the $4.99 shipping?", "Refund of $4.99 issued."]
    memory.append(MEMORY, [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                           for i, t in enumerate(turns)], key=KEY)
    done = fold(memory)
    assert done is not None
    print(f"folded {list(done.removed_seqs)} under a {done.summary.token_count}-token summary")
    for m in memory.read(MEMORY, key=KEY):  # the CONTEXT view: the summary first, then what stayed live
        kind = "summary" if m.kind == pb.MESSAGE_KIND_SUMMARY else f"#{m.seq}"
        print(f"{kind:>8}  {m.content.splitlines()[0]}")
