"""memoryctl: the operator command line of memoryd (needs only grpcio and protobuf).

    memoryctl resources
    memoryctl resolve intake-agent --ctx workflow.input.conversationId=c-9 --ctx user.id=u-1
    memoryctl read customer-support-context --agent intake-agent --ctx ... --raw --follow
    memoryctl stats default --key conv-1
    memoryctl append default --key conv-1 "Hello" ; memoryctl append default --key conv-1 --file msgs.jsonl
    memoryctl clear default --key conv-1 --yes

Human output is an aligned table (long content truncated to the terminal); ``--json`` prints
one JSON object per line in the proto3 JSON mapping (uint64 as strings, enums by name).

Exit codes (docs/clients.md):
  0  success
  1  the operation failed: server error (its status name is printed), an unhealthy daemon
     (``health``), or a declined confirmation (``clear``)
  2  usage error, or INVALID_ARGUMENT from the daemon
  3  NOT_FOUND (unknown memory, agent or reference)
  4  PERMISSION_DENIED or UNAUTHENTICATED (read-only reference, direct access denied, bad token)
  5  UNAVAILABLE or DEADLINE_EXCEEDED (daemon or its store unreachable)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, NoReturn, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from memoryd_client._common import DEFAULT_TARGET, ROLE_NAMES, ROLES, Agent, make_message, read_token_file
from memoryd_client.errors import MemorydClientError
from memoryd_client.sync import MemoryClient
from memoryd_client.v1 import memory_pb2 as pb

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5
EXIT_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
}
DEFAULT_ADDR = DEFAULT_TARGET


class UsageError(Exception):
    """A problem with the command line itself (exit 2)."""


def _bounded_int(limit: int) -> Any:
    """An argparse type: a whole number in 0..limit (the proto field's range), else usage exit 2."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{value} is out of range 0..{limit}")
        return value
    parse.__name__ = "number"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text} is out of range (0, 86400]")
    return value


UINT32, UINT64 = _bounded_int(2**32 - 1), _bounded_int(2**64 - 1)
INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------- text layout


def _cell_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    return sum(_cell_width(ch) for ch in text)


def one_line(text: str) -> str:
    """Make content fit one table row: newlines become ⏎, other control characters spaces."""
    return "".join("⏎" if ch == "\n" else " " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def fit(text: str, width: int | None) -> str:
    """Truncate to ``width`` terminal cells (wide characters count two), ending with …."""
    if width is None or display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = _cell_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


class Table:
    """Aligned columns; the last column takes what is left of the terminal and is truncated."""

    def __init__(self, headers: Sequence[str], right: Sequence[int] = (), wide: bool = False) -> None:
        self.headers = list(headers)
        self.right = set(right)
        self.wide = wide

    def widths(self, rows: Sequence[Sequence[str]]) -> list[int]:
        return [max(display_width(r[i]) for r in [self.headers, *rows]) for i in range(len(self.headers) - 1)]

    def render(self, rows: Sequence[Sequence[str]], widths: list[int] | None = None, header: bool = True) -> list[str]:
        widths = widths or self.widths(rows)
        budget = None if self.wide else max(10, _term_width() - sum(w + 2 for w in widths))
        lines = []
        for row in ([self.headers] if header else []) + [list(r) for r in rows]:
            cells = [pad(c, widths[i], i in self.right) for i, c in enumerate(row[:-1])]
            lines.append("  ".join([*cells, fit(row[-1], budget)]).rstrip())
        return lines


def _term_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns


# ---------------------------------------------------------------- formatting


def ts(t: Any) -> str:
    if not t.seconds and not t.nanos:
        return "-"
    return datetime.fromtimestamp(t.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", "-")


MESSAGE_HEADERS = ("SEQ", "ROLE", "PRI", "TOKENS", "TIME (UTC)", "CONTENT")


def message_row(m: pb.Message) -> list[str]:
    role = ROLE_NAMES.get(m.role, "?")
    if m.kind == pb.MESSAGE_KIND_SUMMARY:
        role = "summary"
    if m.folded:
        role += "+folded"
    return [str(m.seq), role, str(m.effective_priority), str(m.token_count), ts(m.created_at), one_line(m.content)]


def to_json(msg: ProtoMessage) -> dict[str, Any]:
    return dict(json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True))


class Output:
    """Writes human text or JSON lines to stdout."""

    def __init__(self, as_json: bool, wide: bool, stream: TextIO = sys.stdout) -> None:
        self.json = as_json
        self.wide = wide
        self.stream = stream

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def obj(self, data: dict[str, Any]) -> None:
        self.line(json.dumps(data, ensure_ascii=False, sort_keys=False))

    def pairs(self, rows: Iterable[tuple[str, str]]) -> None:
        rows = list(rows)
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            self.line(f"{k.ljust(width)}  {v}")


# ---------------------------------------------------------------- arguments


def parse_context(pairs: Sequence[str] | None, context_json: str | None) -> dict[str, Any]:
    """``--context-json`` first, then each ``--ctx a.b.c=value`` sets a nested string value."""
    ctx: dict[str, Any] = {}
    if context_json:
        try:
            loaded = json.loads(context_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--context-json: not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--context-json: must be a JSON object")
        ctx = loaded
    for pair in pairs or ():
        path, sep, value = pair.partition("=")
        if not sep or not path or any(not part for part in path.split(".")):
            raise UsageError(f"--ctx {pair!r}: expected dotted.path=value")
        node = ctx
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--ctx {pair!r}: {part!r} is already a value")
            node = child
        node[leaf] = value
    return ctx


def target(args: argparse.Namespace) -> dict[str, Any]:
    if args.agent is not None:
        return {"agent": Agent(args.agent, parse_context(args.ctx, args.context_json))}
    if args.ctx or args.context_json:
        raise UsageError("--ctx/--context-json need --agent")
    return {"key": args.key}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and output")
    g.add_argument("--addr", default=argparse.SUPPRESS,
                   help=f"daemon address HOST:PORT or unix:PATH (env MEMORYD_ADDR, default {DEFAULT_ADDR})")
    g.add_argument("--token-file", default=argparse.SUPPRESS,
                   help="file holding the bearer token (env MEMORYD_TOKEN_FILE)")
    g.add_argument("--tls-ca-file", default=argparse.SUPPRESS,
                   help="PEM CA bundle: connect with TLS trusting it (env MEMORYD_TLS_CA_FILE)")
    g.add_argument("--timeout", type=_seconds, default=argparse.SUPPRESS, help="seconds per call (default 5)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON lines on stdout")
    g.add_argument("--wide", action="store_true", default=argparse.SUPPRESS, help="never truncate content")

    def ref_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        if required:
            p.add_argument("memory", help="memory resource id")
        else:
            p.add_argument("memory", nargs="?", help="memory resource id (optional)")
        who = p.add_mutually_exclusive_group(required=required)
        who.add_argument("--key", help="direct instance key")
        who.add_argument("--agent", help="agent id: use its reference (mode enforced)")
        context_args(p)

    def context_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ctx", action="append", metavar="PATH=VALUE",
                       help="template context value, e.g. workflow.input.conversationId=c-9 (repeatable)")
        p.add_argument("--context-json", metavar="JSON", help="the whole template context as a JSON object")

    parser = argparse.ArgumentParser(
        prog="memoryctl", parents=[common], description="Operate a memoryd daemon.",
        epilog="exit codes: 0 ok, 1 failed (server error, unhealthy, declined), 2 usage/invalid argument, "
               "3 not found, 4 permission denied, 5 unavailable/timeout",
    )
    parser.add_argument("--version", action="version", version=f"memoryctl {client_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("resources", parents=[common], help="list memory resources and their budgets")
    p = sub.add_parser("resolve", parents=[common], help="render an agent's references for a context")
    p.add_argument("agent_id", metavar="AGENT")
    context_args(p)
    for name, help_ in (("read", "print an instance's messages"), ("tail", "read --raw --follow")):
        p = sub.add_parser(name, parents=[common], help=help_)
        ref_args(p)
        view = p.add_mutually_exclusive_group()
        view.add_argument("--raw", action="store_true", help="every stored message (default: the context view)")
        view.add_argument("--history", action="store_true",
                          help="every kept message, folded ones too (ROLE marked '+folded'): what the agent saw")
        p.add_argument("--after-seq", type=UINT64, default=0, metavar="N", help="only messages with seq > N")
        p.add_argument("--limit", type=UINT32, default=0, metavar="N", help="at most N messages")
        p.add_argument("--max-tokens", type=UINT32, default=0, metavar="N", help="context view: a smaller budget")
        p.add_argument("-f", "--follow", action="store_true", help="then keep printing new messages")
        p.add_argument("--count", type=UINT64, default=0, metavar="N", help="stop after printing N messages in total")
    p = sub.add_parser("append", parents=[common], help="append one batch of messages (atomically)",
                       description="Messages come from CONTENT arguments (one message each, --role), or as JSON "
                                   "lines from --file (- for stdin), or from stdin when it is not a terminal: "
                                   '{"role": "user", "content": "...", "content_type": "", "priority": 0, '
                                   '"metadata": {}, "persist": true} per line.')
    ref_args(p)
    p.add_argument("content", nargs="*", metavar="CONTENT", help="the content of one message (repeatable)")
    p.add_argument("--role", choices=sorted(ROLES), default="user", help="role of CONTENT messages (default user)")
    p.add_argument("--file", metavar="PATH", help="JSON lines, one message per line; - reads stdin")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="retrying with the same key replays the first result (default: a fresh key)")
    p = sub.add_parser("stats", parents=[common], help="message and token counts of an instance")
    ref_args(p)
    p = sub.add_parser("health", parents=[common], help="daemon health (and an instance's, when given)")
    ref_args(p, required=False)
    p = sub.add_parser("flush", parents=[common], help="run the flushing strategy now")
    ref_args(p)
    p.add_argument("--dry-run", action="store_true", help="only show what would happen")
    p = sub.add_parser("delete", parents=[common], help="delete single messages, live or in history (asks first)")
    ref_args(p)
    p.add_argument("seqs", nargs="+", type=UINT64, metavar="SEQ", help="seq of a message to delete (repeatable)")
    p.add_argument("--if-last-seq", type=UINT64, metavar="N",
                   help="only if the instance's last seq is still N (else ABORTED, nothing deleted)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("clear", parents=[common], help="delete an instance (asks first)")
    ref_args(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("end-workflow", parents=[common], help="delete a workflow's workflow-scoped instances")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("watch", parents=[common], help="print changes of an instance as they happen")
    ref_args(p)
    p.add_argument("--after-seq", type=UINT64, default=0, metavar="N", help="first replay messages with seq > N")
    p.add_argument("--count", type=UINT64, default=0, metavar="N", help="stop after N appended messages")
    return parser


# ---------------------------------------------------------------- commands


def cmd_resources(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    resp = c.list_resources()
    if out.json:
        for r in resp.resources:
            out.obj({"project": resp.project, **to_json(r)})
        return EXIT_OK
    out.line(f"project: {resp.project}")
    table = Table(("ID", "BUDGET", "STRATEGY", "ENCODING", "DESCRIPTION"), right=(1,), wide=out.wide)
    rows = [[r.id, str(r.budget_tokens), enum_name(pb.FlushStrategy, r.strategy, "FLUSH_STRATEGY_"), r.encoding,
             one_line(r.description)] for r in resp.resources]
    for line in table.render(rows):
        out.line(line)
    return EXIT_OK


def cmd_resolve(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    resp = c.resolve_agent(Agent(args.agent_id, parse_context(args.ctx, args.context_json)))
    if out.json:
        out.obj(to_json(resp))
        return EXIT_OK
    level = enum_name(pb.ConfigLevel, resp.level, "CONFIG_LEVEL_")
    out.line(f"agent: {resp.agent_id}  level: {level if resp.level else 'stateless'}")
    if not resp.references:
        out.line("(no memory references)")
        return EXIT_OK
    table = Table(("MEMORY", "MODE", "KEY", "INSTANCE", "TEMPLATE"), wide=out.wide)
    rows = [[r.memory_id, enum_name(pb.AccessMode, r.mode, "ACCESS_MODE_"), r.key, r.instance_id, r.key_template]
            for r in resp.references]
    for line in table.render(rows):
        out.line(line)
    return EXIT_OK


def _messages_then_follow(c: MemoryClient, args: argparse.Namespace) -> Iterator[pb.Message]:
    """The read, then (``--follow``) new messages; ``--count`` stops after that many in total."""
    ref = target(args)
    last, printed = args.after_seq, 0
    view: Literal["context", "raw", "history"] = (
        "history" if getattr(args, "history", False) else "raw" if args.raw else "context")
    for m in c.read(args.memory, **ref, view=view, after_seq=args.after_seq,
                    limit=args.limit, max_tokens=args.max_tokens):
        last = max(last, m.seq)
        yield m
        printed += 1
        if args.count and printed >= args.count:
            return
    if not args.follow:
        return
    for ev in c.watch(args.memory, **ref, after_seq=last):
        for m in ev.appended.messages:
            yield m
            printed += 1
            if args.count and printed >= args.count:
                return


def cmd_read(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    if args.command == "tail":
        args.raw = args.follow = True
    messages = _messages_then_follow(c, args)
    if out.json:
        for m in messages:
            out.obj(to_json(m))
        return EXIT_OK
    table = Table(MESSAGE_HEADERS, right=(0, 2, 3), wide=out.wide)
    if not args.follow:
        rows = [message_row(m) for m in messages]
        lines = table.render(rows) if rows else ["(no messages)"]
        for line in lines:
            out.line(line)
        return EXIT_OK
    widths = [6, 9, 3, 6, 19]  # streaming: fixed widths so rows printed later still line up
    out.line(table.render([], widths)[0])
    for m in messages:
        out.line(table.render([message_row(m)], widths, header=False)[0])
    return EXIT_OK


def cmd_watch(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    table = Table(MESSAGE_HEADERS, right=(0, 2, 3), wide=out.wide)
    widths = [6, 9, 3, 6, 19]
    if not out.json:
        out.line(table.render([], widths)[0])
    seen = 0
    for ev in c.watch(args.memory, **target(args), after_seq=args.after_seq):
        kind = ev.WhichOneof("event")
        if out.json:
            out.obj(to_json(ev))
        elif kind == "appended":
            for m in ev.appended.messages:
                out.line(table.render([message_row(m)], widths, header=False)[0])
        elif kind == "flushed":
            seqs = list(ev.flushed.removed_seqs)
            span = f"seqs {seqs[0]}..{seqs[-1]}" if seqs else "nothing"
            out.line(f"-- flushed: removed {len(seqs)} messages ({span}); "
                     f"summary {ev.flushed.summary.token_count} tokens")
        else:
            out.line("-- cleared")
        seen += len(ev.appended.messages)
        if args.count and seen >= args.count:
            break
    return EXIT_OK


MESSAGE_KEYS = {"role", "content", "content_type", "priority", "metadata", "persist"}


def parse_message_line(line: str, where: str) -> pb.Message:
    """One JSON-lines message, checked here so that a bad line is a usage error naming it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a JSON object per line")
    unknown = sorted(set(data) - MESSAGE_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown fields {', '.join(unknown)}")
    if data.get("role") not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(sorted(ROLES))}")
    for name in ("content", "content_type"):
        if not isinstance(data.get(name, ""), str):
            raise UsageError(f"{where}: {name} must be a string")
    priority = data.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= INT32_MAX):
        raise UsageError(f"{where}: priority must be a whole number in 0..{INT32_MAX}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UsageError(f"{where}: metadata must be an object of strings")
    if not isinstance(data.get("persist", True), bool):
        raise UsageError(f"{where}: persist must be true or false")
    return make_message(data)


def _append_messages(args: argparse.Namespace) -> list[pb.Message]:
    if args.content and args.file is not None:
        raise UsageError("append: pass CONTENT arguments or --file, not both")
    if args.content:
        return [make_message({"role": args.role, "content": text}) for text in args.content]
    if args.file is None and sys.stdin.isatty():
        raise UsageError("append: nothing to append (give CONTENT, --file PATH, or JSON lines on stdin)")
    name = "stdin" if args.file in (None, "-") else args.file
    try:
        if name == "stdin":
            lines = sys.stdin.read().splitlines()
        else:
            with open(args.file, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"--file {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8") from None
    messages = [parse_message_line(line, f"{name} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not messages:
        raise UsageError(f"append: {name} holds no messages")
    return messages


def cmd_append(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    messages = _append_messages(args)
    r = c.append(args.memory, messages, **target(args), idempotency_key=args.idempotency_key)
    if out.json:
        out.obj(to_json(r))
        return EXIT_OK
    seqs = [res.seq for res in r.results]
    span = f"seq {seqs[0]}" if len(seqs) == 1 else f"seqs {seqs[0]}..{seqs[-1]}"
    out.line(f"{'replayed' if r.replayed else 'appended'} {len(seqs)} message{'s' * (len(seqs) != 1)} ({span}); "
             f"instance now {r.stats.message_count} messages, {r.stats.token_count} tokens")
    return EXIT_OK


def _stats_rows(s: pb.InstanceStats) -> list[tuple[str, str]]:
    used = f" ({100 * s.token_count / s.budget_tokens:.1f}% of {s.budget_tokens})" if s.budget_tokens else ""
    return [
        ("instance", s.instance_id),
        ("messages", str(s.message_count)),
        ("tokens", f"{s.token_count}{used}"),
        ("  pinned", str(s.pinned_tokens)),
        ("  summary", str(s.summary_tokens)),
        ("  recent", str(s.recent_tokens)),
        ("last seq", str(s.last_seq)),
        ("flushes", f"{s.flush_count} (last {ts(s.last_flush_at)})"),
        ("strategy", enum_name(pb.FlushStrategy, s.strategy, "FLUSH_STRATEGY_")),
        ("encoding", s.encoding),
    ]


def cmd_stats(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    s = c.stats(args.memory, **target(args))
    if out.json:
        out.obj(to_json(s))
    else:
        out.pairs(_stats_rows(s))
    return EXIT_OK


def cmd_health(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    if args.memory is None and (args.key is not None or args.agent is not None):
        raise UsageError("health: --key/--agent need a MEMORY")
    if args.memory is not None and args.key is None and args.agent is None:
        raise UsageError("health MEMORY: pass --key or --agent")
    h = c.health(args.memory, **target(args)) if args.memory is not None else c.health()
    if out.json:
        out.obj(to_json(h))
    else:
        encoding = h.encoding + (" (fallback)" if h.encoding_fallback else "")
        out.pairs([
            ("healthy", "yes" if h.healthy else "NO"), ("store", h.store),
            ("store reachable", "yes" if h.store_reachable else "NO"), ("breaker", h.breaker_state or "-"),
            ("encoding", encoding), ("version", h.version),
            *[("note", n) for n in h.notes],
        ])
        if h.HasField("instance"):
            i = h.instance
            out.line()
            out.pairs([*_stats_rows(i.stats), ("usage", f"{100 * i.token_usage_ratio:.1f}%"),
                       ("flush pending", "yes" if i.flush_pending else "no"),
                       ("over threshold", "yes" if i.over_threshold else "no")])
    return EXIT_OK if h.healthy else EXIT_FAILED


def cmd_flush(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    r = c.flush(args.memory, **target(args), dry_run=args.dry_run)
    if out.json:
        out.obj(to_json(r))
        return EXIT_OK
    seqs = list(r.removed_seqs)
    verb = "would remove" if not r.applied else "removed"
    span = f" (seqs {seqs[0]}..{seqs[-1]})" if seqs else ""
    out.line(f"{'dry run: ' if not r.applied else ''}{verb} {len(seqs)} messages{span}; "
             f"tokens {r.tokens_before} -> {r.tokens_after}; "
             f"strategy {enum_name(pb.FlushStrategy, r.strategy, 'FLUSH_STRATEGY_')}")
    if r.HasField("summary") and r.summary.content:
        out.line(f"summary ({r.summary.token_count} tokens): {fit(one_line(r.summary.content), _term_width() - 30)}")
    return EXIT_OK


def confirm(question: str, args: argparse.Namespace) -> bool:
    """--yes, or a 'y' typed on a terminal; without a terminal and --yes this is a usage error."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{args.command}: refusing without a terminal to confirm on; pass --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_clear(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    ref = target(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("clear: refusing without a terminal to confirm on; pass --yes")
        s = c.stats(args.memory, **ref)
        if not confirm(f"Delete instance {s.instance_id} ({s.message_count} messages)?", args):
            print("memoryctl: clear not confirmed; nothing deleted", file=sys.stderr)
            return EXIT_FAILED
    removed = c.clear(args.memory, **ref)
    if out.json:
        out.obj({"removed_count": str(removed)})
    else:
        out.line(f"cleared: {removed} messages removed")
    return EXIT_OK


def cmd_delete(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    seqs = ", ".join(map(str, args.seqs))
    if not confirm(f"Delete message(s) {seqs} of this instance, live or in history?", args):
        print("memoryctl: delete not confirmed; nothing deleted", file=sys.stderr)
        return EXIT_FAILED
    resp = c.delete(args.memory, args.seqs, **target(args), if_last_seq=args.if_last_seq)
    if out.json:
        out.obj(to_json(resp))
    else:
        deleted = ", ".join(map(str, resp.deleted_seqs)) or "none (not stored)"
        out.line(f"deleted: {deleted}; the summary is not rewritten")
    return EXIT_OK


def cmd_end_workflow(c: MemoryClient, args: argparse.Namespace, out: Output) -> int:
    if not confirm(f"Delete every workflow-scoped instance of workflow {args.workflow_id}?", args):
        print("memoryctl: end-workflow not confirmed; nothing deleted", file=sys.stderr)
        return EXIT_FAILED
    n = c.end_workflow(args.workflow_id)
    if out.json:
        out.obj({"deleted_instances": str(n)})
    else:
        out.line(f"ended workflow {args.workflow_id}: {n} instances deleted")
    return EXIT_OK


COMMANDS = {
    "resources": cmd_resources, "resolve": cmd_resolve, "read": cmd_read, "tail": cmd_read, "append": cmd_append,
    "stats": cmd_stats, "health": cmd_health, "flush": cmd_flush, "clear": cmd_clear, "delete": cmd_delete,
    "end-workflow": cmd_end_workflow, "watch": cmd_watch,
}


def _fail(code: int, message: str, as_json: bool, status: str = "") -> int:
    if as_json:
        print(json.dumps({"error": {"status": status or "USAGE", "message": message}}, ensure_ascii=False),
              file=sys.stderr)
    else:
        print(f"memoryctl: {message}", file=sys.stderr)
    return code


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return read_token_file(path)
    except OSError as exc:
        raise UsageError(f"--token-file {path}: {exc.strerror}") from None


def _tls_credentials(path: str | None) -> grpc.ChannelCredentials | None:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return grpc.ssl_channel_credentials(root_certificates=fh.read())
    except OSError as exc:
        raise UsageError(f"--tls-ca-file {path}: {exc.strerror}") from None


def client_version() -> str:
    try:
        return version("memoryd-client")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "append" and not any(a.startswith("-") for a in extra):
        args.content += extra  # CONTENT after options: argparse gives positionals out in one go
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    as_json = getattr(args, "json", False)
    out = Output(as_json, getattr(args, "wide", False))
    try:
        # Flags first; what they leave None the client takes from MEMORYD_ADDR, MEMORYD_TOKEN_FILE
        # and MEMORYD_TLS_CA_FILE, exactly as any program using the library does.
        token = _read_token(getattr(args, "token_file", None))
        creds = _tls_credentials(getattr(args, "tls_ca_file", None))
        try:
            client = MemoryClient(getattr(args, "addr", None), token=token, credentials=creds,
                                  timeout=getattr(args, "timeout", 5.0))
        except OSError as exc:
            raise UsageError(f"{exc.filename}: {exc.strerror}") from None
        with client:
            return COMMANDS[args.command](client, args, out)
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc), as_json)
    except MemorydClientError as exc:
        return _fail(EXIT_BY_CODE.get(exc.code, EXIT_FAILED), f"{exc.code.name}: {exc.details}", as_json,
                     exc.code.name)
    except KeyboardInterrupt:
        return EXIT_OK  # the normal end of --follow and watch
    except BrokenPipeError:
        sys.stderr.close()  # `memoryctl read ... | head`: the reader left; not an error
        return EXIT_OK


def main() -> NoReturn:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
