"""Effective priority of a message: the one number the budget rules look at.

Order of precedence (docs/tokens-and-budget.md): an explicit priority, else the priority of the
``priority_blocks`` entry listing the content type, else 0 for the ``system`` and
``developer`` roles (pinned; ``developer`` is OpenAI's successor to ``system``), else the
resource's ``default_priority``. 0 is pinned; higher numbers are evicted first.
"""

from __future__ import annotations

from memoryd.config.model import MemoryResource
from memoryd.errors import InvalidArgument
from memoryd.models import PINNED_PRIORITY

DEFAULT_CONTENT_TYPE = "text"
#: Roles pinned by default: instructions to the model.
PINNED_ROLES = frozenset(("system", "developer"))


def effective_priority(resource: MemoryResource, role: str, content_type: str, explicit: int | None) -> int:
    """The priority the budget rules use for a message.

    A content type listed by several blocks gets the lowest (most protected) of their
    priorities, so the answer never depends on the order of blocks in the YAML.
    An empty content type is ``"text"``.
    """
    if explicit is not None:
        if explicit < 0:
            raise InvalidArgument("priority", f"must be >= 0, got {explicit}")
        return explicit
    ctype = content_type or DEFAULT_CONTENT_TYPE
    matches = [b.priority for b in resource.priority_blocks if ctype in b.content_types]
    if matches:
        return min(matches)
    if role in PINNED_ROLES:
        return PINNED_PRIORITY
    return resource.default_priority
