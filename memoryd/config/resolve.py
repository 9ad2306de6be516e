"""From a request to an instance: the API the manager calls.

An agent-scoped request names an agent, a memory and a template context; a direct
request names a memory and a key. Both end as a ``ResolvedRef``: the instance
address, the access mode and whether the instance is workflow-scoped.

The daemon owns three context values: ``project.id``, ``agent.id`` and
``timestamp`` are filled in here and override whatever the caller sent, so a client
cannot address another project's or agent's instances by faking them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memoryd.config.model import AccessMode, Agent, MemoryReference, Project
from memoryd.config.templates import DEFAULT_FIELD_PREFIX, compile_template, lookup_text
from memoryd.errors import NotFound, PermissionDenied, echo
from memoryd.keys import MAX_DIRECT_KEY_BYTES, InstanceAddr, sanitize_key, validate_direct_key


@dataclass(frozen=True, slots=True)
class ResolvedRef:
    memory_id: str
    mode: AccessMode
    key_template: str  # "" for a direct key
    key: str  # sanitised
    addr: InstanceAddr
    workflow_id: str | None  # set iff the template uses workflow.id
    level: int  # the agent's configuration level; 0 for a direct key


def daemon_context(
    context: Mapping[str, Any], project_id: str, agent_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """``context`` with the daemon-owned values set (RFC 3339 UTC timestamp, seconds)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**context, "project": {"id": project_id}, "agent": {"id": agent_id}, "timestamp": stamp}


def _agent(project: Project, agent_id: str) -> Agent:
    agent = project.agents.get(agent_id)
    if agent is None:
        raise NotFound(f"unknown agent {echo(agent_id)}")
    return agent


def _render(
    project: Project, agent: Agent, ref: MemoryReference, context: Mapping[str, Any], field_prefix: str
) -> ResolvedRef:
    template = compile_template(ref.key_template)  # cached: parsed once at load time
    key = sanitize_key(template.render(context, field_prefix))
    workflow_id = None
    if template.uses_workflow_id:
        workflow_id = lookup_text(context, ("workflow", "id"), field_prefix)
    return ResolvedRef(
        memory_id=ref.memory_id,
        mode=ref.mode,
        key_template=ref.key_template,
        key=key,
        addr=InstanceAddr(project.id, ref.memory_id, key),
        workflow_id=workflow_id,
        level=agent.level,
    )


def resolve_reference(
    project: Project,
    agent_id: str,
    memory_id: str,
    context: Mapping[str, Any],
    *,
    field_prefix: str = DEFAULT_FIELD_PREFIX,
    now: datetime | None = None,
) -> ResolvedRef:
    """The instance ``agent_id`` reaches for ``memory_id``; NotFound / InvalidArgument otherwise."""
    agent = _agent(project, agent_id)
    ref = next((r for r in agent.references if r.memory_id == memory_id), None)
    if ref is None:
        raise NotFound(f"agent {echo(agent_id)} has no reference to memory {echo(memory_id)}")
    return _render(project, agent, ref, daemon_context(context, project.id, agent_id, now), field_prefix)


def resolve_agent(
    project: Project,
    agent_id: str,
    context: Mapping[str, Any],
    *,
    field_prefix: str = "context",
    now: datetime | None = None,
) -> tuple[Agent, list[ResolvedRef]]:
    """Every reference of ``agent_id`` rendered for ``context`` (the first error is raised)."""
    agent = _agent(project, agent_id)
    full = daemon_context(context, project.id, agent_id, now)
    return agent, [_render(project, agent, ref, full, field_prefix) for ref in agent.references]


def resolve_direct(
    project: Project, memory_id: str, key: str, *, max_key_bytes: int = MAX_DIRECT_KEY_BYTES
) -> ResolvedRef:
    """A direct-key address, governed by the resource's ``access.direct``."""
    resource = project.resources.get(memory_id)
    if resource is None:
        raise NotFound(f"unknown memory {echo(memory_id)}")
    if resource.direct_access == "deny":
        raise PermissionDenied(f"memory {echo(memory_id)} does not allow direct keys (access.direct: deny); "
                               "address it through an agent reference")
    clean = validate_direct_key(key, "ref.key", max_key_bytes)
    mode: AccessMode = "read-only" if resource.direct_access == "read-only" else "read-write"
    return ResolvedRef(
        memory_id=memory_id, mode=mode, key_template="", key=clean,
        addr=InstanceAddr(project.id, memory_id, clean), workflow_id=None, level=0,
    )
