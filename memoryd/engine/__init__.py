"""The pure budget engine: priorities, budgets, context views, flush plans, summaries.

No I/O, no asyncio, no tokenizer: token counts arrive with the messages, and the
summariser receives a ``count`` callable. Rules and decisions: docs/tokens-and-budget.md.
"""

from memoryd.engine.budget import (
    MIN_RECENT_TOKENS,
    MIN_SUMMARY_TOKENS,
    Budget,
    budget_problems,
    check_oversize,
    compute_budget,
    message_room,
)
from memoryd.engine.evict import select_evictions
from memoryd.engine.flush import needs_flush, plan_flush, summary_room
from memoryd.engine.priority import effective_priority
from memoryd.engine.summarize import summarize
from memoryd.engine.tail import may_decide, view_from_tail
from memoryd.engine.view import ContextView, context_view, summary_message

__all__ = [
    "MIN_RECENT_TOKENS",
    "MIN_SUMMARY_TOKENS",
    "Budget",
    "ContextView",
    "budget_problems",
    "check_oversize",
    "compute_budget",
    "context_view",
    "effective_priority",
    "may_decide",
    "message_room",
    "needs_flush",
    "plan_flush",
    "select_evictions",
    "summarize",
    "summary_message",
    "summary_room",
    "view_from_tail",
]
