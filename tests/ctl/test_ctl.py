"""memoryctl as a subprocess against a real `memoryd serve` of the example project."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memoryd_client import Agent, MemoryClient
from memoryd_client.ctl import display_width

from tests.support import REPO, daemon_process, free_port, wait_serving

MEMORYCTL = str(Path(sys.executable).parent / "memoryctl")
PROJECT = str(REPO / "examples" / "project" / "memoryd.yaml")
SUPPORT = "customer-support-context"
ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+ \S+|-)\s\s+(.*)$")


@pytest.fixture(scope="module")
def addr() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--config", PROJECT, "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        yield address


def ctl(addr: str, *args: str, stdin: Any = subprocess.DEVNULL, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "MEMORYD_ADDR": addr}
    return subprocess.run([MEMORYCTL, *args], env=env, stdin=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def conversation() -> tuple[Agent, list[str]]:
    """A fresh conversation of intake-agent, and the memoryctl flags that address it."""
    conv, user = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    agent = Agent("intake-agent", {"workflow": {"input": {"conversationId": conv}}, "user": {"id": user}})
    return agent, ["--agent", "intake-agent", "--ctx", f"workflow.input.conversationId={conv}",
                   "--ctx", f"user.id={user}"]


LONG = "Hello 👋, my order 記憶 has not arrived.\nSecond line " + "x" * 300


@pytest.fixture
def filled(addr: str) -> tuple[Agent, list[str]]:
    agent, flags = conversation()
    with MemoryClient(addr) as c:
        c.append(SUPPORT, [{"role": "system", "content": "Be kind.", "content_type": "instructions"},
                           {"role": "user", "content": LONG},
                           {"role": "assistant", "content": "Sorry! Let me check 🔍"}], agent=agent)
    return agent, flags


def test_resources_table_and_json_lines(addr: str) -> None:
    r = ctl(addr, "resources")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "project: support-demo"
    assert lines[1].split() == ["ID", "BUDGET", "STRATEGY", "ENCODING", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[2:]}
    assert rows["customer-support-context"] == ["4000", "hybrid-summary", "o200k_base"]
    assert rows["user-preferences"] == ["1000", "fifo", "o200k_base"]
    assert all(display_width(line) <= 80 for line in lines)
    j = [json.loads(line) for line in ctl(addr, "resources", "--json").stdout.splitlines()]
    assert {x["id"] for x in j} == {"customer-support-context", "user-preferences", "escalation-notes"}
    assert all(x["project"] == "support-demo" and x["budget_tokens"].isdigit() for x in j)


def test_resolve_shows_each_reference_with_its_mode(addr: str) -> None:
    r = ctl(addr, "resolve", "intake-agent", "--ctx", "workflow.input.conversationId=c-9", "--ctx", "user.id=u-1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "agent: intake-agent  level: advanced"
    table = {line.split()[0]: line.split()[1:3] for line in lines[2:]}
    assert table == {SUPPORT: ["read-write", "support-c-9"], "user-preferences": ["read-only", "prefs-u-1"]}
    j = json.loads(ctl(addr, "--json", "resolve", "intake-agent", "--context-json",
                       '{"workflow": {"input": {"conversationId": "c-9"}}, "user": {"id": "u-1"}}').stdout)
    assert [(x["memory_id"], x["mode"], x["key"]) for x in j["references"]] == [
        (SUPPORT, "ACCESS_MODE_READ_WRITE", "support-c-9"), ("user-preferences", "ACCESS_MODE_READ_ONLY", "prefs-u-1")]


def test_read_prints_an_aligned_truncated_table(addr: str, filled: tuple[Agent, list[str]]) -> None:
    _, flags = filled
    r = ctl(addr, "read", SUPPORT, *flags, "--raw")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["SEQ", "ROLE", "PRI", "TOKENS", "TIME", "(UTC)", "CONTENT"]
    parsed = [ROW.match(line) for line in rows]
    assert all(parsed), rows
    assert [(m[1], m[2], m[3]) for m in parsed if m] == [("1", "system", "0"), ("2", "user", "5"),
                                                        ("3", "assistant", "5")]
    starts = {m.start(6) for m in parsed if m} | {header.index("CONTENT")}
    assert len(starts) == 1, "CONTENT column not aligned"
    assert all(display_width(line) <= 80 for line in rows)
    assert parsed[1] and parsed[1][6].startswith("Hello 👋, my order 記憶 has") and parsed[1][6].endswith("…")
    wider = ctl(addr, "read", SUPPORT, *flags, "--raw", columns=120).stdout.splitlines()[2]
    assert "arrived.⏎Second line xxx" in wider and wider.endswith("x…") and display_width(wider) <= 120
    wide = ctl(addr, "read", SUPPORT, *flags, "--raw", "--wide").stdout
    assert "x" * 300 in wide


def test_read_json_lines_are_exact_and_filters_apply(addr: str, filled: tuple[Agent, list[str]]) -> None:
    _, flags = filled
    r = ctl(addr, "--json", "read", SUPPORT, *flags, "--raw")
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert [m["content"] for m in got] == ["Be kind.", LONG, "Sorry! Let me check 🔍"]
    assert [m["seq"] for m in got] == ["1", "2", "3"]
    page = [json.loads(line) for line in ctl(addr, "read", SUPPORT, *flags, "--raw", "--after-seq", "1",
                                             "--limit", "1", "--json").stdout.splitlines()]
    assert [m["seq"] for m in page] == ["2"]
    ctx = [json.loads(line) for line in ctl(addr, "read", SUPPORT, *flags, "--json").stdout.splitlines()]
    assert ctx[0]["content"] == "Be kind." and ctx[-1]["content"] == "Sorry! Let me check 🔍"


def test_stats_and_health(addr: str, filled: tuple[Agent, list[str]]) -> None:
    _, flags = filled
    r = ctl(addr, "stats", SUPPORT, *flags)
    assert r.returncode == 0, r.stderr
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in r.stdout.splitlines())
    assert fields["messages"] == "3" and fields["last seq"] == "3" and fields["strategy"] == "hybrid-summary"
    assert re.fullmatch(r"\d+ \(\d+\.\d% of 4000\)", fields["tokens"])
    j = json.loads(ctl(addr, "stats", SUPPORT, *flags, "--json").stdout)
    assert j["message_count"] == "3" and j["budget_tokens"] == "4000"
    h = ctl(addr, "health")
    assert h.returncode == 0 and re.search(r"^healthy\s+yes$", h.stdout, re.M)
    hi = json.loads(ctl(addr, "health", SUPPORT, *flags, "--json").stdout)
    assert hi["healthy"] is True and hi["instance"]["stats"]["message_count"] == "3"


def test_flush_dry_run_changes_nothing(addr: str, filled: tuple[Agent, list[str]]) -> None:
    _, flags = filled
    before = json.loads(ctl(addr, "stats", SUPPORT, *flags, "--json").stdout)
    r = ctl(addr, "flush", SUPPORT, *flags, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("dry run: would remove ")
    plan = json.loads(ctl(addr, "flush", SUPPORT, *flags, "--dry-run", "--json").stdout)
    assert plan["applied"] is False
    assert json.loads(ctl(addr, "stats", SUPPORT, *flags, "--json").stdout) == before
    done = json.loads(ctl(addr, "flush", SUPPORT, *flags, "--json").stdout)
    assert done["applied"] is True and done["removed_seqs"] == plan["removed_seqs"]
    after = json.loads(ctl(addr, "stats", SUPPORT, *flags, "--json").stdout)
    assert after["flush_count"] == str(int(before["flush_count"]) + 1)


def test_clear_refuses_without_a_terminal_and_without_yes(addr: str, filled: tuple[Agent, list[str]]) -> None:
    agent, flags = filled
    r = ctl(addr, "clear", SUPPORT, *flags)
    assert r.returncode == 2 and "--yes" in r.stderr
    with MemoryClient(addr) as c:
        assert c.stats(SUPPORT, agent=agent).message_count == 3
    r = ctl(addr, "clear", SUPPORT, *flags, "--yes")
    assert (r.returncode, r.stdout) == (0, "cleared: 3 messages removed\n")
    with MemoryClient(addr) as c:
        assert c.stats(SUPPORT, agent=agent).message_count == 0


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, 3), ("y\n", 0, 0)])
def test_clear_asks_on_a_terminal(addr: str, filled: tuple[Agent, list[str]], answer: str, code: int,
                                  left: int) -> None:
    agent, flags = filled
    primary, secondary = pty.openpty()
    try:
        os.write(primary, answer.encode())  # typed ahead; the terminal's line discipline holds it
        r = ctl(addr, "clear", SUPPORT, *flags, stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert r.returncode == code, r.stderr
    assert "(3 messages)? [y/N]" in r.stderr
    with MemoryClient(addr) as c:
        assert c.stats(SUPPORT, agent=agent).message_count == left


def test_exit_codes_name_the_failure(addr: str) -> None:
    missing = ctl(addr, "stats", "no-such-memory", "--key", "k")
    assert (missing.returncode, missing.stderr) == (3, "memoryctl: NOT_FOUND: unknown memory 'no-such-memory'\n")
    ro = ["--agent", "intake-agent", "--ctx", "user.id=u-1"]
    denied = ctl(addr, "clear", "user-preferences", *ro, "--yes")
    assert denied.returncode == 4 and denied.stderr.startswith("memoryctl: PERMISSION_DENIED: ")
    direct = ctl(addr, "stats", SUPPORT, "--key", "k")  # access.direct: deny
    assert direct.returncode == 4
    invalid = ctl(addr, "stats", "user-preferences", "--key", "")
    assert (invalid.returncode, invalid.stderr) == (2, "memoryctl: INVALID_ARGUMENT: ref.key: must not be empty\n")
    assert ctl(addr, "read", SUPPORT).returncode == 2  # neither --key nor --agent
    assert ctl(addr, "resolve", "intake-agent", "--ctx", "no-equals-sign").returncode == 2
    down = ctl(f"127.0.0.1:{free_port()}", "--timeout", "0.5", "health")
    assert down.returncode == 5 and "UNAVAILABLE" in down.stderr
    as_json = ctl(addr, "--json", "stats", "no-such-memory", "--key", "k")
    assert json.loads(as_json.stderr)["error"]["status"] == "NOT_FOUND"


def test_watch_and_follow_print_new_messages(addr: str, filled: tuple[Agent, list[str]]) -> None:
    agent, flags = filled
    env = {**os.environ, "MEMORYD_ADDR": addr, "COLUMNS": "100"}
    watch = subprocess.Popen([MEMORYCTL, "--json", "watch", SUPPORT, *flags, "--after-seq", "3", "--count", "2"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    follow = subprocess.Popen([MEMORYCTL, "tail", SUPPORT, *flags, "--count", "5"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Race-free: a watch established late replays from --after-seq, and tail's --count counts the
    # messages it prints in total, whether they arrived through its read or its watch.
    with MemoryClient(addr) as c:
        c.append(SUPPORT, [{"role": "user", "content": "new 1 🆕"}, {"role": "user", "content": "new 2"}], agent=agent)
    w_out, w_err = watch.communicate(timeout=30)
    f_out, f_err = follow.communicate(timeout=30)
    assert watch.returncode == 0 and follow.returncode == 0, (w_err, f_err)
    events = [json.loads(line) for line in w_out.splitlines()]
    assert [m["content"] for e in events for m in e["appended"]["messages"]] == ["new 1 🆕", "new 2"]
    rows = [ROW.match(line) for line in f_out.splitlines()[1:]]
    assert [(m[1], m[6]) for m in rows if m] == [("1", "Be kind."), ("2", rows[1][6] if rows[1] else ""),
                                                ("3", "Sorry! Let me check 🔍"), ("4", "new 1 🆕"), ("5", "new 2")]


def test_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--auth-token-file", str(secret), "--shutdown-grace", "1"):
        wait_serving(address)
        assert ctl(address, "--token-file", str(secret), "stats", "default", "--key", "k").returncode == 0
        refused = ctl(address, "--token-file", str(wrong), "stats", "default", "--key", "k")
        assert refused.returncode == 4
        assert re.match(r"memoryctl: (PERMISSION_DENIED|UNAUTHENTICATED): ", refused.stderr)
        assert ctl(address, "--token-file", str(tmp_path / "absent"), "health").returncode == 2


def test_append_from_arguments_a_file_and_stdin_reads_back(addr: str, tmp_path: Path) -> None:
    agent, flags = conversation()
    one = ctl(addr, "append", SUPPORT, *flags, "Hello 👋", "second\nline", "--role", "assistant")
    assert (one.returncode, one.stderr) == (0, "")
    assert one.stdout.startswith("appended 2 messages (seqs 1..2); instance now 2 messages")
    lines = [{"role": "system", "content": "Be terse.", "priority": 0},
             {"role": "user", "content": "記憶 🧠", "content_type": "text", "metadata": {"lang": "mixed"}}]
    jsonl = tmp_path / "msgs.jsonl"
    jsonl.write_text("\n".join(json.dumps(m, ensure_ascii=False) for m in lines) + "\n\n", encoding="utf-8")
    from_file = ctl(addr, "--json", "append", SUPPORT, *flags, "--file", str(jsonl))
    assert from_file.returncode == 0, from_file.stderr
    assert [r["seq"] for r in json.loads(from_file.stdout)["results"]] == ["3", "4"]
    with jsonl.open() as stdin:  # stdin that is not a terminal: JSON lines, no flag needed
        from_stdin = ctl(addr, "append", SUPPORT, *flags, stdin=stdin)
    assert from_stdin.returncode == 0, from_stdin.stderr
    with MemoryClient(addr) as c:
        got = c.read_all(SUPPORT, agent=agent, view="raw")
    assert [(m.role, m.content) for m in got] == [
        (3, "Hello 👋"), (3, "second\nline"), (1, "Be terse."), (2, "記憶 🧠"), (1, "Be terse."), (2, "記憶 🧠")]
    assert got[3].metadata["lang"] == "mixed" and got[2].HasField("priority") and got[2].priority == 0
    again = ctl(addr, "append", SUPPORT, *flags, "once", "--idempotency-key", "k-1")
    replay = ctl(addr, "append", SUPPORT, *flags, "once", "--idempotency-key", "k-1")
    assert again.stdout.startswith("appended 1 message (seq 7)") and replay.stdout.startswith("replayed 1 message")


@pytest.mark.parametrize(("line", "error"), [
    ("not json", "stdin line 2: not JSON"),
    ('["user", "x"]', "stdin line 2: expected a JSON object"),
    ('{"role": "boss", "content": "x"}', "stdin line 2: role must be one of"),
    ('{"role": "user", "content": "x", "colour": "red"}', "stdin line 2: unknown fields colour"),
    ('{"role": "user", "content": 7}', "stdin line 2: content must be a string"),
    ('{"role": "user", "content": "x", "priority": -1}', "stdin line 2: priority must be"),
    ('{"role": "user", "content": "x", "priority": 4294967296}', "stdin line 2: priority must be"),
    ('{"role": "user", "content": "x", "metadata": {"n": 1}}', "stdin line 2: metadata must be"),
])
def test_append_refuses_a_bad_line_with_usage_exit_2_and_stores_nothing(addr: str, line: str, error: str) -> None:
    agent, flags = conversation()
    r = subprocess.run([MEMORYCTL, "append", SUPPORT, *flags], input='{"role": "user", "content": "ok"}\n'
                       + line + "\n", env={**os.environ, "MEMORYD_ADDR": addr}, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.startswith(f"memoryctl: {error}"), r.stderr
    assert "Traceback" not in r.stderr
    with MemoryClient(addr) as c:
        assert c.stats(SUPPORT, agent=agent).message_count == 0


def test_version() -> None:
    from importlib.metadata import version

    r = subprocess.run([MEMORYCTL, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stdout) == (0, f"memoryctl {version('memoryd-client')}\n")


@pytest.mark.parametrize("args", [
    ["read", "default", "--key", "k", "--limit", "-1"],
    ["read", "default", "--key", "k", "--limit", "4294967296"],
    ["read", "default", "--key", "k", "--max-tokens", "99999999999"],
    ["read", "default", "--key", "k", "--after-seq", "18446744073709551616"],
    ["read", "default", "--key", "k", "--after-seq", "-5"],
    ["watch", "default", "--key", "k", "--count", "-1"],
    ["--timeout", "-1", "stats", "default", "--key", "k"],
    ["--timeout", "nan", "stats", "default", "--key", "k"],
    ["read", "default", "--key", "k", "--limit", "ten"],
])
def test_out_of_range_numbers_are_usage_errors(addr: str, args: list[str]) -> None:
    r = ctl(addr, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "usage: memoryctl" in r.stderr, r.stderr


def test_unreadable_tls_ca_file_is_a_usage_error(addr: str, tmp_path: Path) -> None:
    flag = ctl(addr, "--tls-ca-file", str(tmp_path / "absent.crt"), "health")
    assert (flag.returncode, flag.stderr) == (2, f"memoryctl: --tls-ca-file {tmp_path / 'absent.crt'}: "
                                                 "No such file or directory\n")
    env = {**os.environ, "MEMORYD_ADDR": addr, "MEMORYD_TLS_CA_FILE": str(tmp_path / "env.crt")}
    from_env = subprocess.run([MEMORYCTL, "health"], env=env, capture_output=True, text=True, timeout=60, check=False)
    missing = tmp_path / "env.crt"
    assert (from_env.returncode, from_env.stderr) == (2, f"memoryctl: {missing}: No such file or directory\n")


def test_history_shows_folded_messages_and_delete_forgets_one(addr: str, filled: tuple[Agent, list[str]]) -> None:
    """An operator audits what an agent saw (read --history, folded messages marked) and
    forgets a message (delete, conditional on --if-last-seq)."""
    agent, flags = filled
    with MemoryClient(addr) as c:
        c.append(SUPPORT, [{"role": "user", "content": f"turn {i}"} for i in range(6)], agent=agent)
        folded = list(c.flush(SUPPORT, agent=agent).removed_seqs)
    assert folded
    r = ctl(addr, "read", SUPPORT, *flags, "--history", columns=200)
    assert r.returncode == 0, r.stderr
    rows = {int(m.group(1)): m.group(2) for m in map(ROW.match, r.stdout.splitlines()[1:]) if m}
    assert sorted(rows) == list(range(1, 10))  # every message kept, folded or live
    assert {s for s, role in rows.items() if role.endswith("+folded")} == set(folded)
    assert ctl(addr, "read", SUPPORT, *flags, "--history", "--raw").returncode == 2  # one view at a time

    refused = ctl(addr, "delete", SUPPORT, *flags, str(folded[0]), "--if-last-seq", "8", "--yes")
    assert refused.returncode != 0 and "ABORTED" in refused.stderr  # last seq is 9: nothing deleted
    assert ctl(addr, "delete", SUPPORT, *flags, str(folded[0])).returncode == 2  # no terminal, no --yes
    done = ctl(addr, "--json", "delete", SUPPORT, *flags, str(folded[0]), "999", "--if-last-seq", "9", "--yes")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted_seqs"] == [str(folded[0])]
    after = ctl(addr, "--json", "read", SUPPORT, *flags, "--history")
    assert folded[0] not in [int(json.loads(line)["seq"]) for line in after.stdout.splitlines()]
