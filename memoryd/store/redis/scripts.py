"""The Lua scripts: every mutation of an instance is exactly one of them.

Written for Redis 6.2 (no FUNCTION, no EXPIRE NX/XX/GT/LT, no XADD/XTRIM options newer
than 6.2). Each script validates everything *before* its first write, because Redis
does not roll back the writes of a script that fails half-way. Every key a script
touches is passed in KEYS and shares the instance's hash tag, so on a Cluster each
script runs on one slot. Times come from the server's TIME (one clock for every daemon).

Mutation scripts take KEYS = ``layout.InstanceKeys.data`` of one instance (msgs, meta, sum,
idem, idemx, hist, calls); the TTL refresh and CLEAR cover every key they are given.
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

from memoryd.store.redis.layout import ENTRY_FIELDS, META_FIELDS, PINS_FIELD, PRIORITY_COUNT_PREFIX, SUMMARY_FIELDS


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
    OTHER_FOLD = 4  # {OTHER_FOLD, current flush_count}: another fold since the plan (external folds)


class DeleteReply(IntEnum):
    """The first element of DELETE_MESSAGES' reply."""

    DONE = 0  # {DONE, deleted seqs, meta} (nothing deleted: an empty list)
    LAST_SEQ_CHANGED = 1  # {LAST_SEQ_CHANGED, current last_seq}: if_last_seq no longer holds


# APPLY_FLUSH's ARGV before the seqs to remove (see the script); the seqs start after them.
APPLY_FLUSH_FIRST_SEQ = 13


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
    names |= {f"DELETE_{r.name}": str(int(r)) for r in DeleteReply}
    names["FLUSH_FIRST_SEQ"] = str(APPLY_FLUSH_FIRST_SEQ)
    return Template(source).substitute(
        names, META=_lua_list(META_FIELDS), SUMMARY=_lua_list(SUMMARY_FIELDS), XADD_FIELDS=_xadd_fields(),
        PER_MESSAGE=str(len(_ARGV_FIELDS)), FIRST_ID=str(8 + _ARGV_FIELDS.index("i")),
        PRIO_ARG=str(8 + _ARGV_FIELDS.index("p")),
        T_AT=str(2 * ENTRY_FIELDS.index("t") + 2), P_AT=str(2 * ENTRY_FIELDS.index("p") + 2),
        PINS=f"'{PINS_FIELD}'", NPRIO=f"'{PRIORITY_COUNT_PREFIX}'",
    )


# Shared prelude: server time, the meta reply and the TTL refresh of every data key.
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
-- The read index (layout.PINS_FIELD, PRIORITY_COUNT_PREFIX; docs/redis.md, "Reads"). A script
-- that removes an entry calls unindex with its seq and stored priority (strings), when the
-- instance is indexed (indexed()): the counts per priority and the pinned seqs stay exact.
local function indexed()
  return redis.call('HEXISTS', KEYS[2], $PINS) == 1
end
-- An entry's token count and effective priority, found by name (entries of any age).
local function tokens_and_priority(f)
  local tok, prio = 0, nil
  for j = 1, #f, 2 do
    if f[j] == 't' then tok = tonumber(f[j + 1]) elseif f[j] == 'p' then prio = f[j + 1] end
  end
  return tok, prio
end
local function unindex(seq, prio)
  if redis.call('HINCRBY', KEYS[2], $NPRIO .. prio, -1) <= 0 then redis.call('HDEL', KEYS[2], $NPRIO .. prio) end
  if prio == '0' then
    local kept = {}
    for s in string.gmatch(redis.call('HGET', KEYS[2], $PINS) or '', '%d+') do
      if s ~= seq then kept[#kept + 1] = s end
    end
    redis.call('HSET', KEYS[2], $PINS, table.concat(kept, ' '))
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
-- the calls of a wiped incarnation (a key left behind without its meta) are not this one's
local exists = redis.call('EXISTS', KEYS[2]) == 1
for k = 1, na do
  if (not exists) or redis.call('HEXISTS', KEYS[7], ARGV[c0 + k]) == 0 then return {$APPEND_UNKNOWN_CALL, k} end
end
local c1 = c0 + na + 1
local nc = tonumber(ARGV[c1])
for k = 1, nc do
  if exists and redis.call('HEXISTS', KEYS[7], ARGV[c1 + 2 * k - 1]) == 1 then return {$APPEND_DUPLICATE_CALL, k} end
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
  if tail[1] then
    last = tonumber(string.match(tail[1][1], '^(%d+)'))
  else
    redis.call('HSET', KEYS[2], $PINS, '')  -- created now: indexed from its first message
  end
end
local created = string.format('%d', now_ms)
if redis.call('HEXISTS', KEYS[2], 'epoch') == 0 then
  -- a new incarnation never inherits the history or the calls of a wiped one (keys left behind)
  if not exists then redis.call('DEL', KEYS[6], KEYS[7]) end
  redis.call('HSET', KEYS[2], 'epoch', ARGV[$FIRST_ID])
end
for i = 0, n - 1 do
  local b = 8 + $PER_MESSAGE * i
  redis.call('XADD', KEYS[1], string.format('%d-0', last + 1 + i), $XADD_FIELDS)
end
for k = 1, nc do
  redis.call('HSET', KEYS[7], ARGV[c1 + 2 * k - 1], string.format('%d', last + 1 + tonumber(ARGV[c1 + 2 * k])))
end
redis.call('HINCRBY', KEYS[2], 'message_count', string.format('%d', n))
redis.call('HINCRBY', KEYS[2], 'pinned_tokens', string.format('%d', add_pinned))
redis.call('HINCRBY', KEYS[2], 'recent_tokens', string.format('%d', add_recent))
redis.call('HSET', KEYS[2], 'last_seq', string.format('%d', last + n))
local pins = redis.call('HGET', KEYS[2], $PINS)
if pins then
  local per, new_pins = {}, {}
  for i = 0, n - 1 do
    local prio = ARGV[$PRIO_ARG + $PER_MESSAGE * i]
    per[prio] = (per[prio] or 0) + 1
    if prio == '0' then new_pins[#new_pins + 1] = string.format('%d', last + 1 + i) end
  end
  for prio, k in pairs(per) do redis.call('HINCRBY', KEYS[2], $NPRIO .. prio, k) end
  if #new_pins > 0 then
    if pins ~= '' then pins = pins .. ' ' end
    redis.call('HSET', KEYS[2], $PINS, pins .. table.concat(new_pins, ' '))
  end
end
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
# messages are dropped unfolded (fifo: counted in meta.evicted), the fold count the plan was
# made at (ARGV[10]; '' = not checked; PlanFlush/ApplyFlush), '1' to keep the removed
# messages in history (ARGV[11]), the history cap (ARGV[12]; 0: none), then from
# ARGV[APPLY_FLUSH_FIRST_SEQ] the seqs to remove.
# History: each removed entry moves to KEYS[6] (score = seq, member = its fields as JSON),
# so a fold loses nothing; beyond the cap the lowest seqs are dropped (meta.history_dropped).
# Reply: ``ApplyFlushReply``.
APPLY_FLUSH = _script(_PRELUDE + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {$FLUSH_GONE} end
local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
if ARGV[8] ~= '' and epoch ~= ARGV[8] then return {$FLUSH_OTHER_EPOCH, epoch} end
local cur = redis.call('HGET', KEYS[2], 'fence')
if (not cur) or tonumber(cur) ~= tonumber(ARGV[1]) then return {$FLUSH_STALE_FENCE, cur or '0'} end
-- external folds: refuse a plan made before another fold (ARGV[10], '' = no check)
local folds = redis.call('HGET', KEYS[2], 'flush_count') or '0'
if ARGV[10] ~= '' and tonumber(folds) ~= tonumber(ARGV[10]) then return {$FLUSH_OTHER_FOLD, folds} end
-- end external folds
local keep_history = ARGV[11] == '1'
local removed = {}
local rm_pinned, rm_recent = 0, 0
local index = indexed()
for i = $FLUSH_FIRST_SEQ, #ARGV do
  local id = ARGV[i] .. '-0'
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] then
    local f = e[1][2]
    local tok, prio = tokens_and_priority(f)
    redis.call('XDEL', KEYS[1], id)
    if keep_history then redis.call('ZADD', KEYS[6], ARGV[i], cjson.encode(f)) end
    if index then unindex(ARGV[i], prio) end
    if prio == '0' then rm_pinned = rm_pinned + tok else rm_recent = rm_recent + tok end
    removed[#removed + 1] = ARGV[i]
  end
end
if keep_history and #removed > 0 then
  local dropped, cap = 0, tonumber(ARGV[12])
  if cap > 0 then
    dropped = redis.call('ZCARD', KEYS[6]) - cap
    if dropped > 0 then redis.call('ZREMRANGEBYRANK', KEYS[6], 0, dropped - 1) else dropped = 0 end
  end
  redis.call('HINCRBY', KEYS[2], 'history_messages', string.format('%d', #removed - dropped))
  if dropped > 0 then redis.call('HINCRBY', KEYS[2], 'history_dropped', string.format('%d', dropped)) end
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
  redis.call('HSET', KEYS[2], 'summary_tokens', ARGV[5], 'summary_through_seq', ARGV[6])
end
redis.call('HINCRBY', KEYS[2], 'flush_count', 1)
redis.call('HSET', KEYS[2], 'last_flush_at_ms', string.format('%d', now_ms))
touch(tonumber(ARGV[2]))
return {$FLUSH_APPLIED, removed, meta()}
""")

# ARGV: ttl_ms, if_last_seq ('' = unconditional; compared as the decimal text HSET stored),
# then the seqs to delete (unique). Each is deleted from the live stream or from history,
# whichever holds it; seqs held by neither are ignored. Counters move by what was deleted,
# and delete_count by one when anything was (the read caches of other daemons re-validate
# against it). Reply: ``DeleteReply``.
DELETE_MESSAGES = _script(_PRELUDE + """
local last = redis.call('HGET', KEYS[2], 'last_seq') or '0'
if ARGV[2] ~= '' and last ~= ARGV[2] then return {$DELETE_LAST_SEQ_CHANGED, last} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {$DELETE_DONE, {}, meta()} end
local deleted = {}
local rm_pinned, rm_recent, rm_live, rm_hist = 0, 0, 0, 0
local index = indexed()
for i = 3, #ARGV do
  local id = ARGV[i] .. '-0'
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if e[1] then
    local f = e[1][2]
    local tok, prio = tokens_and_priority(f)
    redis.call('XDEL', KEYS[1], id)
    if index then unindex(ARGV[i], prio) end
    if prio == '0' then rm_pinned = rm_pinned + tok else rm_recent = rm_recent + tok end
    rm_live = rm_live + 1
    deleted[#deleted + 1] = ARGV[i]
  elseif redis.call('ZREMRANGEBYSCORE', KEYS[6], ARGV[i], ARGV[i]) > 0 then
    rm_hist = rm_hist + 1
    deleted[#deleted + 1] = ARGV[i]
  end
end
if #deleted > 0 then
  redis.call('HINCRBY', KEYS[2], 'message_count', string.format('%d', 0 - rm_live))
  redis.call('HINCRBY', KEYS[2], 'pinned_tokens', string.format('%d', 0 - rm_pinned))
  redis.call('HINCRBY', KEYS[2], 'recent_tokens', string.format('%d', 0 - rm_recent))
  redis.call('HINCRBY', KEYS[2], 'history_messages', string.format('%d', 0 - rm_hist))
  redis.call('HINCRBY', KEYS[2], 'delete_count', 1)
  touch(tonumber(ARGV[1]))
end
return {$DELETE_DONE, deleted, meta()}
""")

# Deletes every data key of the instance, history included (the lock expires by itself).
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

# One page of the HISTORY view, read consistently (a fold between two separate reads could
# show a message twice, or not at all). KEYS = (msgs, hist); ARGV = first stream id
# ("<after_seq + 1>-0"), "(<after_seq>" (exclusive score), limit (0: all).
# Reply: {live entries (XRANGE), history (ZRANGEBYSCORE WITHSCORES)}, each at most ``limit``.
HISTORY_PAGE = """
local n = tonumber(ARGV[3])
if n > 0 then
  return {redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', n),
          redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', 0, n)}
end
return {redis.call('XRANGE', KEYS[1], ARGV[1], '+'),
        redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf', 'WITHSCORES')}
"""


# What a context view needs, without the whole stream (``RedisStore.tail_state``). KEYS = (msgs,
# meta, sum); ARGV = (min_tokens, min_messages, < 0: no count bound). Reply: {meta as HGETALL}
# when the instance does not exist (empty) or has no read index (an older daemon created it);
# else {meta, summary, pinned entries oldest first, non-pinned entries newest first}, going
# back until those older than the newest hold more than min_tokens tokens, or there are more
# than min_messages, or to the oldest. Pages: the first one sized by the instance's mean tokens per message,
# doubling after; the cost is the entries returned (and skipped pinned ones), not the stream.
TAIL = _script("""
local meta = redis.call('HGETALL', KEYS[2])
local pins = redis.call('HGET', KEYS[2], $PINS)
if #meta == 0 or not pins then return {meta} end
local summary = redis.call('HMGET', KEYS[3], $SUMMARY)
local pinned = {}
for seq in string.gmatch(pins, '%d+') do
  local e = redis.call('XRANGE', KEYS[1], seq .. '-0', seq .. '-0')
  if e[1] then pinned[#pinned + 1] = e[1] end
end
local need_t, need_n = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = tonumber(redis.call('HGET', KEYS[2], 'message_count') or '0') - #pinned
local rtok = tonumber(redis.call('HGET', KEYS[2], 'recent_tokens') or '0')
local page = 16
if stored > 0 and rtok > 0 then page = math.max(page, math.ceil((need_t + 1) * stored / rtok) + 8) end
if need_n >= 0 then page = math.min(page, need_n + 8) end
local tail, tokens, cursor = {}, 0, '+'
while true do
  local rows = redis.call('XREVRANGE', KEYS[1], cursor, '-', 'COUNT', page)
  local enough = false
  for i = 1, #rows do
    local f = rows[i][2]
    if f[$P_AT] ~= '0' then
      if #tail > 0 then tokens = tokens + tonumber(f[$T_AT]) end  -- the newest is not counted
      tail[#tail + 1] = rows[i]
      if tokens > need_t or (need_n >= 0 and #tail > need_n) then
        enough = true
        break
      end
    end
  end
  if enough or #rows < page then break end
  cursor = '(' .. rows[#rows][1]
  page = page * 2
end
return {meta, summary, pinned, tail}
""")

ALL = {
    "append": APPEND,
    "apply_flush": APPLY_FLUSH,
    "clear": CLEAR,
    "delete_messages": DELETE_MESSAGES,
    "history_page": HISTORY_PAGE,
    "fence": FENCE,
    "workflow_add": WORKFLOW_ADD,
    "state": STATE,
    "tail": TAIL,
}
