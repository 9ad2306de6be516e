"""The Lua scripts: every mutation of an instance is exactly one of them.

Written for Redis 6.2 (no FUNCTION, no EXPIRE NX/XX/GT/LT, no XADD/XTRIM options newer
than 6.2). Each script validates everything *before* its first write, because Redis
does not roll back the writes of a script that fails half-way. Every key a script
touches is passed in KEYS and shares the instance's hash tag, so on a Cluster each
script runs on one slot. Times come from the server's TIME (one clock for every daemon).

Mutation scripts take KEYS = (msgs, meta, sum, idem, idemx, calls) of one instance
(``InstanceKeys.data``); the TTL refresh and CLEAR cover every key they are given.
Numbers handed to Redis are formatted with ``string.format('%d')``: Lua's own
conversion prints large numbers in exponent form and a negated zero as "-0", which
HINCRBY rejects (and a script that fails half-way keeps its earlier writes).

Field lists (meta, summary, stream entry) come from ``layout.py`` and every reply code
is a named constant beside its script: the Lua source is a ``string.Template`` filled
with both at import, so the scripts and the Python that reads their replies cannot
disagree on a number or an order.
"""

from __future__ import annotations

from enum import IntEnum
from string import Template

from memoryd.store.redis.layout import ENTRY_FIELDS, META_FIELDS, SUMMARY_FIELDS


class AppendReply(IntEnum):
    """The first element of APPEND's reply."""

    STORED = 0  # {STORED, first_seq, now_ms, meta}
    REPLAYED = 1  # {REPLAYED, record, meta}: a known idempotency key with the same batch
    PINNED_FULL = 2  # {PINNED_FULL, pinned_tokens, adding}: nothing stored
    KEY_CONFLICT = 3  # {KEY_CONFLICT}: the idempotency key stored a batch with another digest
    UNKNOWN_CALL = 4  # {UNKNOWN_CALL, k}: the k-th answered call id (1-based) is not in the instance
    DUPLICATE_CALL = 5  # {DUPLICATE_CALL, k}: the k-th new call id (1-based) is already in the instance


class ApplyFlushReply(IntEnum):
    """The first element of APPLY_FLUSH's reply."""

    APPLIED = 0  # {APPLIED, removed seqs, meta}
    STALE_FENCE = 1  # {STALE_FENCE, current fence}: the lock was lost
    GONE = 2  # {GONE}: the instance does not exist
    OTHER_EPOCH = 3  # {OTHER_EPOCH, current epoch}: wiped and created again since the plan's read


_ARGV_FIELDS = tuple(f for f in ENTRY_FIELDS if f != "c")  # per message, as codec.message_args


def _lua_list(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _xadd_fields() -> str:
    """XADD's field/value list in ``ENTRY_FIELDS`` order: ``c`` is the server time, the others
    are the message's ARGV values in ``codec.message_args`` order (the entry order less ``c``)."""
    return ", ".join("'c', created" if name == "c" else f"'{name}', ARGV[b + {_ARGV_FIELDS.index(name)}]"
                     for name in ENTRY_FIELDS)


def _script(source: str) -> str:
    names = {f"APPEND_{r.name}": str(int(r)) for r in AppendReply}
    names |= {f"FLUSH_{r.name}": str(int(r)) for r in ApplyFlushReply}
    return Template(source).substitute(
        names, META=_lua_list(META_FIELDS), SUMMARY=_lua_list(SUMMARY_FIELDS), XADD_FIELDS=_xadd_fields(),
        PER_MESSAGE=str(len(_ARGV_FIELDS)), FIRST_ID=str(8 + _ARGV_FIELDS.index("i")),
    )


# Shared prelude: server time, the meta reply and the TTL refresh of all five keys.
_PRELUDE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local META = {$META}
local function meta()
  return redis.call('HMGET', KEYS[2], unpack(META))
end
local function touch(ttl)
  for i = 1, #KEYS do
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
  end
end
"""

# ARGV: ttl_ms (<=0: no expiry), pinned_cap (<0: none), idempotency field, idempotency
# window ms, record tail, n, batch digest, then per message (9 each, ``codec.message_args``):
# token_count, effective_priority, id, role, content, content_type, priority ('' = unset),
# metadata JSON ('' = empty), extensions JSON ('' = none); then the tool calls
# (``codec.call_args``, memoryd.store.calls): the number of call ids the batch answers from
# the instance and those ids, then the number of calls the batch makes and, for each, its
# id and its message's position in the batch. Reply: ``AppendReply``.
# The call checks run before any write: a refused batch stores nothing.
# An idempotency record is "<first seq>:<ms>:<digest>:<tail>" (codec.parse_record); records
# written before digests existed ("<first seq>:<ms>:<tail>") replay without the check.
# A new instance (no epoch in meta: created now, or written by a daemon that predates epochs)
# takes the first message's id as its epoch: ids are unique across daemons and calls.
APPEND = _script(_PRELUDE + """
local ik = ARGV[3]
if ik ~= '' then
  local rec = redis.call('HGET', KEYS[4], ik)
  if rec then
    local exp = redis.call('ZSCORE', KEYS[5], ik)
    if exp and tonumber(exp) > now_ms then
      local digest = string.match(rec, '^%d+:%d+:([0-9a-f]+):')
      if digest and digest ~= ARGV[7] then return {$APPEND_KEY_CONFLICT} end
      return {$APPEND_REPLAYED, rec, meta()}
    end
  end
end
local n = tonumber(ARGV[6])
local c0 = 8 + $PER_MESSAGE * n
local na = tonumber(ARGV[c0])
for k = 1, na do
  if redis.call('HEXISTS', KEYS[6], ARGV[c0 + k]) == 0 then return {$APPEND_UNKNOWN_CALL, k} end
end
local c1 = c0 + na + 1
local nc = tonumber(ARGV[c1])
for k = 1, nc do
  if redis.call('HEXISTS', KEYS[6], ARGV[c1 + 2 * k - 1]) == 1 then return {$APPEND_DUPLICATE_CALL, k} end
end
local add_pinned, add_recent = 0, 0
for i = 0, n - 1 do
  local tok = tonumber(ARGV[8 + $PER_MESSAGE * i])
  if ARGV[9 + $PER_MESSAGE * i] == '0' then add_pinned = add_pinned + tok else add_recent = add_recent + tok end
end
local cap = tonumber(ARGV[2])
if cap >= 0 and add_pinned > 0 then
  local cur = tonumber(redis.call('HGET', KEYS[2], 'pinned_tokens') or '0')
  if cur + add_pinned > cap then return {$APPEND_PINNED_FULL, cur, add_pinned} end
end
local last = redis.call('HGET', KEYS[2], 'last_seq')
if last then
  last = tonumber(last)
else
  -- new instance (or a meta hash lost on its own): never go below the stream's last id
  last = 0
  local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if tail[1] then last = tonumber(string.match(tail[1][1], '^(%d+)')) end
end
local created = string.format('%d', now_ms)
if redis.call('HEXISTS', KEYS[2], 'epoch') == 0 then redis.call('HSET', KEYS[2], 'epoch', ARGV[$FIRST_ID]) end
for i = 0, n - 1 do
  local b = 8 + $PER_MESSAGE * i
  redis.call('XADD', KEYS[1], string.format('%d-0', last + 1 + i), $XADD_FIELDS)
end
for k = 1, nc do
  redis.call('HSET', KEYS[6], ARGV[c1 + 2 * k - 1], string.format('%d', last + 1 + tonumber(ARGV[c1 + 2 * k])))
end
redis.call('HINCRBY', KEYS[2], 'message_count', string.format('%d', n))
redis.call('HINCRBY', KEYS[2], 'pinned_tokens', string.format('%d', add_pinned))
redis.call('HINCRBY', KEYS[2], 'recent_tokens', string.format('%d', add_recent))
redis.call('HSET', KEYS[2], 'last_seq', string.format('%d', last + n))
if ik ~= '' then
  redis.call('HSET', KEYS[4], ik, string.format('%d:%d:', last + 1, now_ms) .. ARGV[7] .. ':' .. ARGV[5])
  redis.call('ZADD', KEYS[5], string.format('%d', now_ms + tonumber(ARGV[4])), ik)
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', string.format('%d', now_ms), 'LIMIT', 0, 16)
  if #old > 0 then
    redis.call('HDEL', KEYS[4], unpack(old))
    redis.call('ZREM', KEYS[5], unpack(old))
  end
end
touch(tonumber(ARGV[1]))
return {$APPEND_STORED, last + 1, now_ms, meta()}
""")

# ARGV: fence, ttl_ms, has_summary ('1'/'0'), summary content, summary tokens, through_seq,
# updated_at_ms, epoch the plan was made from ('' = not checked), '1' when the removed
# messages are dropped unfolded (fifo: counted in meta.evicted), then the seqs to remove.
# Reply: ``ApplyFlushReply``.
APPLY_FLUSH = _script(_PRELUDE + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {$FLUSH_GONE} end
local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
if ARGV[8] ~= '' and epoch ~= ARGV[8] then return {$FLUSH_OTHER_EPOCH, epoch} end
local cur = redis.call('HGET', KEYS[2], 'fence')
if (not cur) or tonumber(cur) ~= tonumber(ARGV[1]) then return {$FLUSH_STALE_FENCE, cur or '0'} end
local removed = {}
local rm_pinned, rm_recent = 0, 0
for i = 10, #ARGV do
  local id = ARGV[i] .. '-0'
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] then
    local f = e[1][2]
    local tok, prio = 0, nil
    for j = 1, #f, 2 do
      if f[j] == 't' then tok = tonumber(f[j + 1]) elseif f[j] == 'p' then prio = f[j + 1] end
    end
    redis.call('XDEL', KEYS[1], id)
    if prio == '0' then rm_pinned = rm_pinned + tok else rm_recent = rm_recent + tok end
    removed[#removed + 1] = ARGV[i]
  end
end
if #removed > 0 then
  redis.call('HINCRBY', KEYS[2], 'message_count', string.format('%d', 0 - #removed))
  redis.call('HINCRBY', KEYS[2], 'pinned_tokens', string.format('%d', 0 - rm_pinned))
  redis.call('HINCRBY', KEYS[2], 'recent_tokens', string.format('%d', 0 - rm_recent))
  if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[2], 'evicted', string.format('%d', #removed)) end
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'content', ARGV[4], 'token_count', ARGV[5],
    'through_seq', ARGV[6], 'updated_at_ms', ARGV[7])  -- SUMMARY_FIELDS
  redis.call('HSET', KEYS[2], 'summary_tokens', ARGV[5])
end
redis.call('HINCRBY', KEYS[2], 'flush_count', 1)
redis.call('HSET', KEYS[2], 'last_flush_at_ms', string.format('%d', now_ms))
touch(tonumber(ARGV[2]))
return {$FLUSH_APPLIED, removed, meta()}
""")

# Deletes every data key of the instance (the lock expires by itself).
# Reply: {messages deleted, number of keys that existed}.
CLEAR = """
local n = tonumber(redis.call('HGET', KEYS[2], 'message_count') or '0')
local existed = redis.call('EXISTS', unpack(KEYS))
if existed > 0 then redis.call('DEL', unpack(KEYS)) end
return {n, existed}
"""

# A new fencing token right after the lock was acquired: max(current + 1, server time in
# microseconds), so tokens keep increasing even across a failover that lost the last
# increment or an instance deleted and re-created. Not stored when the instance does not
# exist (apply-flush then has nothing to do). KEYS = (meta).
FENCE = """
local t = redis.call('TIME')
local f = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return f end
local cur = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if f <= cur then f = cur + 1 end
redis.call('HSET', KEYS[1], 'fence', string.format('%d', f))
return f
"""

# Records an instance in a workflow index; the index lives as long as its longest-lived
# instance (TTL only ever extended; no TTL if any instance has none). KEYS = (index),
# ARGV = (instance prefix, ttl_ms).
WORKFLOW_ADD = """
local ttl = tonumber(ARGV[2])
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
if ttl <= 0 then
  redis.call('PERSIST', KEYS[1])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  local cur = redis.call('PTTL', KEYS[1])
  if cur >= 0 and cur < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return 1
"""

# Counters, summary and all messages in one consistent read. KEYS = (msgs, meta, sum).
STATE = _script("""
return {
  redis.call('HMGET', KEYS[2], $META),
  redis.call('HMGET', KEYS[3], $SUMMARY),
  redis.call('XRANGE', KEYS[1], '-', '+')
}
""")

ALL = {
    "append": APPEND,
    "apply_flush": APPLY_FLUSH,
    "clear": CLEAR,
    "fence": FENCE,
    "workflow_add": WORKFLOW_ADD,
    "state": STATE,
}
