"""Key sanitising, direct-key validation and the storage namespace."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memoryd.errors import InvalidArgument
from memoryd.keys import (
    MAX_DIRECT_KEY_BYTES,
    MAX_KEY_LENGTH,
    InstanceAddr,
    sanitize_key,
    set_log_hash_key,
    validate_direct_key,
)
from memoryd.store.redis.layout import InstanceKeys

ALLOWED = re.compile(r"[A-Za-z0-9\-_.:]+")

# Keys an attacker might craft to reach another tenant's instance or escape the namespace.
CRAFTED = [
    "../other",
    "a/../../b",
    "*",
    "support-*",
    "{",
    "}",
    "{abc}",
    "support-{c-9}",
    "support c-9",
    " support-c-9",
    "support-c-9 ",
    "x" * 10_240,
    "é",
    "support-c-9\u200b",
    "支持",
    "\x00",
    "support-c-9\n",
    "",
]


@given(st.text())
def test_sanitised_keys_use_only_allowed_characters_and_fit(raw: str) -> None:
    key = sanitize_key(raw)
    assert ALLOWED.fullmatch(key)
    assert len(key) <= MAX_KEY_LENGTH


@given(st.text(), st.text())
def test_distinct_raw_keys_never_share_a_sanitised_key(a: str, b: str) -> None:
    assert (sanitize_key(a) == sanitize_key(b)) == (a == b)


@given(st.text(alphabet="ab _.-h0123456789abcdef", max_size=40), st.text(alphabet="ab _.h0f", max_size=40))
def test_injective_on_near_collisions(a: str, b: str) -> None:
    """A small alphabet makes sanitised forms and hash-like suffixes collide often if they can."""
    assert (sanitize_key(a) == sanitize_key(b)) == (a == b)


@given(st.text())
def test_distinct_raw_keys_never_share_an_instance(raw: str) -> None:
    other = raw + "x"
    a = InstanceAddr("p", "r", sanitize_key(raw))
    b = InstanceAddr("p", "r", sanitize_key(other))
    assert a.instance_id != b.instance_id
    assert a.storage_hash != b.storage_hash


def test_clean_keys_are_kept_verbatim() -> None:
    assert sanitize_key("support-c-9") == "support-c-9"
    assert sanitize_key("a:b.c_d-e") == "a:b.c_d-e"
    assert sanitize_key("x" * MAX_KEY_LENGTH) == "x" * MAX_KEY_LENGTH


@pytest.mark.parametrize("raw", CRAFTED)
def test_crafted_keys_are_sanitised_and_hashed(raw: str) -> None:
    key = sanitize_key(raw)
    assert ALLOWED.fullmatch(key)
    assert len(key) <= MAX_KEY_LENGTH
    assert key != raw
    assert re.search(r"\.h[0-9a-f]{16}$", key)


def test_crafted_keys_cannot_reach_each_other_or_a_clean_key() -> None:
    # ".." is made of allowed characters and stays as is: harmless, since a key is never a
    # path and storage key names carry only the instance hash (see test_namespace_and_hash_tag).
    clean = ["support-c-9", "other", "..", "support-c-9.h0123456789abcdef"]
    keys = [sanitize_key(k) for k in CRAFTED + clean]
    assert len(set(keys)) == len(keys)


def test_a_raw_key_imitating_a_hashed_key_is_hashed_again() -> None:
    victim = sanitize_key("support c-9")  # "support_c-9.h<16 hex>"
    assert victim.startswith("support_c-9.h")
    imitation = sanitize_key(victim)
    assert imitation != victim
    assert imitation.startswith(victim)


def test_long_keys_keep_their_distinct_hash() -> None:
    a, b = "x" * 10_000 + "a", "x" * 10_000 + "b"
    assert len(sanitize_key(a)) == MAX_KEY_LENGTH
    assert sanitize_key(a) != sanitize_key(b)
    assert sanitize_key("x" * (MAX_KEY_LENGTH + 1)) != "x" * MAX_KEY_LENGTH


def test_validate_direct_key() -> None:
    assert validate_direct_key("support-c-9") == "support-c-9"
    assert validate_direct_key("../x") == sanitize_key("../x")
    assert validate_direct_key("é" * (MAX_DIRECT_KEY_BYTES // 2)) == sanitize_key("é" * (MAX_DIRECT_KEY_BYTES // 2))


@pytest.mark.parametrize(
    ("key", "problem"),
    [("", "must not be empty"), ("x" * (MAX_DIRECT_KEY_BYTES + 1), "1025 bytes"), ("é" * 513, "1026 bytes")],
)
def test_validate_direct_key_rejects(key: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as info:
        validate_direct_key(key)
    assert info.value.field == "ref.key"


def test_namespace_and_hash_tag() -> None:
    """The key names Redis sees (``store/redis/layout.py``): namespaced, one hash tag per instance."""
    addr = InstanceAddr("support-demo", "customer-support-context", "support-c-9")
    prefix = InstanceKeys.of(addr).prefix
    assert prefix == f"memoryd:v1:{{{addr.storage_hash}}}:support-demo:customer-support-context"
    assert addr.hash_tag in prefix
    # the prefix holds exactly one hash tag, so Redis Cluster slots by the instance hash
    assert prefix.count("{") == 1
    assert prefix.count("}") == 1
    other = InstanceAddr("support-demo", "customer-support-context", "support-c-10")
    assert InstanceKeys.of(other).prefix != prefix


@given(st.text(), st.text())
def test_key_names_of_distinct_keys_differ(a: str, b: str) -> None:
    pa = InstanceKeys.of(InstanceAddr("p", "r", sanitize_key(a))).prefix
    pb = InstanceKeys.of(InstanceAddr("p", "r", sanitize_key(b))).prefix
    assert (pa == pb) == (a == b)


def test_storage_names_never_change() -> None:
    """Redis key names derive from the unkeyed storage hash: pinned, or stored data would be orphaned
    (whatever the log hash key)."""
    set_log_hash_key("a deployment secret")
    try:
        addr = InstanceAddr("support-demo", "customer-support-context", "support-c-9")
    finally:
        set_log_hash_key("")
    assert addr.hash_tag == "{e27756e6e787e600}"
    assert InstanceKeys.of(addr).meta == "memoryd:v1:{e27756e6e787e600}:support-demo:customer-support-context:meta"


@pytest.fixture
def log_key() -> Iterator[None]:
    yield
    set_log_hash_key("")  # back to a random key: later tests never see a known one


def _simple_hashes(*texts: str) -> set[str]:
    """Every 16-hex prefix an attacker would try first: unkeyed digests of the key or the instance id."""
    return {hashlib.new(alg, t.encode()).hexdigest()[:16]
            for alg in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "blake2b", "blake2s")
            for t in texts}


@pytest.mark.usefixtures("log_key")
def test_logged_instance_hash_is_keyed_with_the_deployment_secret() -> None:
    """The issue's brute force: hashing likely keys (``support-48213``) must not find the logged value."""
    set_log_hash_key("secret one")
    a = InstanceAddr("default", "default", "support-48213")
    assert InstanceAddr("default", "default", "support-48213").instance_hash == a.instance_hash  # stable
    assert re.fullmatch(r"[0-9a-f]{16}", a.instance_hash)
    assert a.instance_hash not in _simple_hashes(a.key, a.instance_id) | {a.storage_hash}
    assert a.instance_hash == hmac.new(b"secret one", b"default/default/support-48213", "sha256").hexdigest()[:16]
    set_log_hash_key("secret two")
    b = InstanceAddr("default", "default", "support-48213")
    assert b.instance_hash != a.instance_hash
    assert b.storage_hash == a.storage_hash and b == a  # the same instance, stored under the same names


def test_without_a_secret_the_log_hash_is_random_per_process() -> None:
    code = "from memoryd.keys import InstanceAddr; print(InstanceAddr('p', 'r', 'k').instance_hash)"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
            for _ in range(2)]
    first, second = (r.stdout.strip() for r in runs)
    assert re.fullmatch(r"[0-9a-f]{16}", first) and first != second
