"""What an append batch asks of the instance's tool calls; both stores check it atomically.

A tool result must answer a call made earlier in the same batch or stored in the instance,
and a call id is used once per instance (the id is how a result finds its call). Each store
keeps the instance's call ids (id -> seq of the message that made the call) for as long as
the instance lives, folded messages included, and checks a batch against them inside the
append's own atomic step: two appenders racing cannot both pass, and a refused batch
stores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from memoryd.errors import ToolCallRefused
from memoryd.models import NewMessage


class BatchCalls(NamedTuple):
    #: (call id, position in the batch, index in its tool_calls) of every call the batch makes.
    new: list[tuple[str, int, int]]
    #: (call id, position) of every tool result whose call is not made earlier in the batch:
    #: the instance must already have it.
    answers: list[tuple[str, int]]


def batch_calls(messages: Sequence[NewMessage]) -> BatchCalls:
    """The calls ``messages`` make and the stored calls they answer; ToolCallRefused for an
    id made twice in the batch (validation refuses that first, naming the request field)."""
    made: set[str] = set()
    new: list[tuple[str, int, int]] = []
    answers: list[tuple[str, int]] = []
    for pos, m in enumerate(messages):
        if m.role == "tool" and m.tool_call_id and m.tool_call_id not in made:
            answers.append((m.tool_call_id, pos))
        for j, call in enumerate(m.tool_calls):
            if call.id in made:
                raise ToolCallRefused(pos, j, call.id)
            made.add(call.id)
            new.append((call.id, pos, j))
    return BatchCalls(new, answers)
