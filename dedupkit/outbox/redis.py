"""The Redis outbox, for shops whose senders run on several hosts.

Every operation is one Lua script, so Redis applies it atomically: there is no moment where an
idempotency key exists without its queued entry, or an entry is neither queued nor leased.
Keys share the hash tag ``{namespace}`` so that they live in one Redis Cluster slot::

    {ns}:idem:<sha256 of name, event_id>  entry id; SET with a 7-day TTL (Pinterest's max age)
    {ns}:entry:<id>   hash: payload (JSON), name, event_id, event_time, created, attempts,
                      claims, error, reason, died_at, and the coverage summary fields, value,
                      currency; once acked the payload goes, delivered_at and test come, and
                      the hash expires after DELIVERED_TTL
    {ns}:due          sorted set of pending ids, scored by the time they are due
    {ns}:created      sorted set of pending and in-flight ids, scored by enqueue time
    {ns}:lease        sorted set of in-flight ids, scored by lease expiry
    {ns}:dead         sorted set of dead-letter ids, scored by died_at
    {ns}:delivered    sorted set of delivered ids, scored by ack time (trimmed: TTL and cap)
    {ns}:born         sorted set of every id, scored by enqueue time (trimmed: a day and cap)
    {ns}:seq          entry id counter
    {ns}:stats        hash: delivered, duplicate
    {ns}:lag          hash: delivery-lag histogram, bucket index -> count, and sum
    {ns}:skipped      hash: reason -> count
    {ns}:skips        capped list of JSON ``[when, reason, event_name, event_id]``, newest first
    {ns}:tags         hash: "<event_name>\n<event_id>" -> "1" (tag fired) or "0"
    {ns}:tags_at      sorted set of those fields by when they came (trimmed: TTL and cap)
    {ns}:errors       capped list of JSON ``[when, message]``, newest first
    {ns}:pause        "no request before" time, only ever raised (or cleared)
    {ns}:pause_info   hash: until, reason, kind, token_id of the pause raised last

``claim`` takes entries whose lease ran out first (their claimer died), then due ones, moves
them to ``lease`` scored ``now + lease`` and bumps the entry's claim counter. ``Claimed.id`` is
``<entry id>:<claim number>``: ``retry`` and ``dead`` only act for the current claim (an id
without its claim number is ignored), so a stalled sender whose entry was claimed again cannot
undo the new claimer's work, while ``ack`` is honoured from any claim and even over a dead
letter, as the event did reach Pinterest.
As in the SQLite outbox, a reclaim does not count as an attempt and only ``retry`` does.

Why not a Stream and a consumer group: leases and retries follow the caller's clock and the
caller's ``lease`` (``now=``, so tests need not wait), whereas ``XAUTOCLAIM`` measures idle time
on the server's clock with one threshold; scheduled retries need a sorted set anyway, and
every process would leave its consumer name in the group for good. The sorted sets give the
same guarantees, at least once with reclaim by any sender, with one source of truth.

Hosts must keep their clocks in sync (NTP), well within the lease. Redis must not evict keys
(``maxmemory-policy noeviction``, the default): an evicted entry is a lost event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError, OutboxError
from ..redaction import REDACTED, redact
from ..vocabulary import EventState
from .base import (
    DUPLICATE,
    EVIDENCE_KEPT,
    EVIDENCE_TTL,
    LAG_BUCKETS,
    MAX_DEVICE_LENGTH,
    MAX_MESSAGE_LENGTH,
    SKIPS_KEPT,
    TOTALS,
    Claimed,
    DeadLetter,
    LedgerEntry,
    NewerOutbox,
    OutboxStats,
    Pause,
    Skip,
    as_offline_text,
    event_time_of,
    foreign_outbox,
    ledger_entry,
    stored_entry,
    summary_of,
)

try:
    import redis
    from redis.commands.core import Script
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "A redis:// DEDUPKIT_QUEUE_URL needs the redis client: pip install 'flask-dedupkit[redis]'"
    ) from exc

__all__ = ["RedisOutbox"]

#: The schema this version writes under ``{ns}:schema``; a namespace with a higher one was
#: written by a newer dedupkit and is refused.
SCHEMA_VERSION = 1
#: How long ``(event_name, event_id)`` stays taken: Pinterest rejects events older than this.
IDEMPOTENCY_TTL = 7 * 24 * 3600
#: How many recent delivery errors :meth:`RedisOutbox.stats` reports.
LAST_ERRORS_KEPT = 10
#: Longer error messages are cut, so that a verbose response cannot bloat Redis.
MAX_ERROR_LENGTH = MAX_MESSAGE_LENGTH
#: Dead letters read per step when a replay rewrites payloads or a listing filters by reason.
_CHUNK = 500
#: Socket timeouts of the client built from the URL (query parameters in the URL win).
SOCKET_TIMEOUT = 5.0
#: How long a delivered entry's summary stays (for the ledger and coverage over a day), and
#: how many are kept at most.
DELIVERED_TTL = 25 * 3600
DELIVERED_KEPT = 100_000
#: The ``born`` index covers this long, and this many entries at most.
BORN_TTL = 25 * 3600
BORN_KEPT = 200_000

_PUT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'duplicate', 1)
  return 0
end
local id
repeat id = redis.call('INCR', KEYS[2]) until redis.call('EXISTS', ARGV[1] .. id) == 0
redis.call('HSET', ARGV[1] .. id, 'payload', ARGV[2], 'name', ARGV[3], 'event_id', ARGV[4],
           'created', ARGV[5], 'attempts', 0, 'claims', 0, 'event_time', ARGV[7],
           'fields', ARGV[8], 'value', ARGV[9], 'currency', ARGV[10], 'account', ARGV[13])
redis.call('ZADD', KEYS[3], ARGV[5], id)
redis.call('ZADD', KEYS[4], ARGV[5], id)
redis.call('ZADD', KEYS[6], ARGV[5], id)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[11])
local extra = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[12])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[6], 0, extra - 1) end
redis.call('HINCRBY', KEYS[5], 'queued', 1)
-- Last, so that a failure above never leaves the key taken without a queued entry.
redis.call('SET', KEYS[1], id, 'EX', ARGV[6])
return 1
"""

_CLAIM = """
local limit = tonumber(ARGV[4])
local out = {}
local function take(id)
  local key = ARGV[1] .. id
  redis.call('ZREM', KEYS[1], id)
  local payload = redis.call('HGET', key, 'payload')
  local owner = redis.call('HGET', key, 'account')
  if payload and ARGV[5] ~= '' and owner and owner ~= '' and owner ~= ARGV[5] then
    -- Another shop's event: never this sender's to send (see bind, which refuses the mix).
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    return
  end
  if not payload then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    return
  end
  redis.call('ZADD', KEYS[3], ARGV[3], id)
  local claim = redis.call('HINCRBY', key, 'claims', 1)
  local f = redis.call('HMGET', key, 'attempts', 'event_time')
  out[#out + 1] = id .. ':' .. claim
  out[#out + 1] = f[1]
  out[#out + 1] = payload
  out[#out + 1] = f[2]
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, limit)
for _, id in ipairs(expired) do take(id) end
if limit > #expired then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, limit - #expired)
  for _, id in ipairs(due) do take(id) end
end
return out
"""

# ARGV: entry prefix, now, test ('', '0', '1'), TTL, trim cutoff, cap, lag bounds, ids...
# The payload goes (it was sent); the summary stays for the ledger and coverage.
_ACK = """
local bounds = {}
for b in string.gmatch(ARGV[7], '[^,]+') do bounds[#bounds + 1] = tonumber(b) end
local now = tonumber(ARGV[2])
local n, total = 0, 0
local devices = cjson.decode(ARGV[8])
for i = 9, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], id) or redis.call('ZSCORE', KEYS[4], id) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    local key = ARGV[1] .. id
    local f = redis.call('HMGET', key, 'event_time', 'created')
    local born = tonumber(f[1])
    local lag = math.max(0, now - born)
    local bucket = #bounds
    for j = 1, #bounds do
      if lag <= bounds[j] then bucket = j - 1 break end
    end
    redis.call('HINCRBY', KEYS[7], tostring(bucket), 1)
    total = total + lag
    redis.call('HDEL', key, 'payload', 'error', 'reason', 'died_at')
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'delivered_at', ARGV[2], 'test', ARGV[3])
    local device = devices[id]
    if type(device) == 'string' and device ~= '' then redis.call('HSET', key, 'device', device) end
    redis.call('EXPIRE', key, ARGV[4])
    redis.call('ZADD', KEYS[6], ARGV[2], id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[5], 'delivered', n)
  redis.call('HINCRBYFLOAT', KEYS[7], 'sum', string.format('%.6f', total))
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[5])
  local extra = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[6])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[6], 0, extra - 1) end
end
return n
"""

# Shared head of retry and dead: the ids whose current claim the caller holds.
_HELD = """
local function held(first)
  local ids = {}
  for i = first, #ARGV, 2 do
    local id, claim = ARGV[i], ARGV[i + 1]
    if redis.call('ZSCORE', KEYS[1], id)
       and (claim == '' or redis.call('HGET', ARGV[1] .. id, 'claims') == claim) then
      redis.call('ZREM', KEYS[1], id)
      ids[#ids + 1] = id
    end
  end
  return ids
end
local function log_error(record)
  -- One failed batch may be rescheduled in several calls: one entry is enough.
  local newest = redis.call('LINDEX', KEYS[4], 0)
  local ok, old = pcall(cjson.decode, newest or '')
  if ok and type(old) == 'table' and old[2] == cjson.decode(record)[2] then
    redis.call('LPOP', KEYS[4])
  end
  redis.call('LPUSH', KEYS[4], record)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
end
"""

_RETRY = (
    _HELD
    + """
local ids = held(7)
local sent = tonumber(ARGV[6])
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  redis.call('HINCRBY', key, 'attempts', sent)
  redis.call('HSET', key, 'error', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
if #ids > 0 and sent > 0 then log_error(ARGV[4]) end
return #ids
"""
)

_DEAD = (
    _HELD
    + """
local ids = held(7)
for _, id in ipairs(ids) do
  redis.call('HSET', ARGV[1] .. id, 'reason', ARGV[3], 'died_at', ARGV[2])
  redis.call('HINCRBY', ARGV[1] .. id, 'attempts', tonumber(ARGV[6]))
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('ZREM', KEYS[3], id)
end
if #ids > 0 then
  log_error(ARGV[4])
  redis.call('HINCRBY', KEYS[5], 'dead', #ids)
end
return #ids
"""
)

# ARGV[3]: 'all' dead letters, 'ids' listed after it, or 'payloads': (id, new payload) pairs.
_REPLAY = """
local ids, payloads = {}, {}
if ARGV[3] == 'all' then
  ids = redis.call('ZRANGE', KEYS[3], 0, -1)
elseif ARGV[3] == 'ids' then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  for i = 4, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
    payloads[ARGV[i]] = ARGV[i + 1]
  end
end
local n = 0
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  if redis.call('ZREM', KEYS[3], id) == 1 then
    local created = redis.call('HGET', key, 'created')
    if created then
      redis.call('HSET', key, 'attempts', 0)
      if payloads[id] then redis.call('HSET', key, 'payload', payloads[id]) end
      redis.call('HDEL', key, 'reason', 'died_at', 'error')
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      redis.call('ZADD', KEYS[2], created, id)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[4], 'replayed', n) end
return n
"""

# Dead letters newest first that died at or after ARGV[3] (a score or '-inf') and, when
# ARGV[5] is '1', whose reason is ARGV[4]: up to ARGV[2] rows, or with ARGV[2] = '0' their
# number. Reads the dead set in steps, so a filter costs the dead letters it skips.
_DEAD_LETTERS = """
local limit = tonumber(ARGV[2])
local step = tonumber(ARGV[6])
local out, count, offset = {}, 0, 0
while true do
  local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[3], 'LIMIT', offset, step)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', ARGV[1] .. id, 'name', 'event_id', 'reason', 'died_at',
                         'attempts')
    if f[1] and (ARGV[5] == '0' or f[3] == ARGV[4]) then
      count = count + 1
      if limit > 0 then
        out[#out + 1] = id
        for i = 1, 5 do out[#out + 1] = f[i] or '' end
        if count >= limit then return out end
      end
    end
  end
end
if limit > 0 then return out end
return count
"""

# One ledger row: state, score, then the fields below (the payload only when the entry has
# no summary), and its tag evidence. KEYS[3] is the lease set, KEYS[4] the evidence hash.
_ROW = """
local FIELDS = {'name', 'event_id', 'attempts', 'event_time', 'error', 'reason', 'payload',
                'fields', 'created', 'value', 'currency', 'test', 'device'}
local function row(out, id, state, score)
  local f = redis.call('HMGET', ARGV[1] .. id, unpack(FIELDS))
  if not f[1] or not (f[7] or f[8]) then return false end
  if state == 'live' then
    state = redis.call('ZSCORE', KEYS[3], id) and 'sending' or 'pending'
  end
  if f[8] then f[7] = '' end
  out[#out + 1] = state
  out[#out + 1] = score
  for j = 1, #FIELDS do out[#out + 1] = f[j] or '' end
  out[#out + 1] = redis.call('HGET', KEYS[4], f[1] .. '\\n' .. f[2]) or ''
  return true
end
"""

# The newest live (by enqueue time), delivered and dead (by when they were) entries, merged,
# cut to the limit, and only then read: at most 3 * limit ids and limit hashes per call.
_RECENT = (
    _ROW
    + """
local limit = tonumber(ARGV[2])
local rows = {}
local function collect(key, state)
  local found = redis.call('ZREVRANGE', key, 0, limit - 1, 'WITHSCORES')
  for i = 1, #found, 2 do
    rows[#rows + 1] = {found[i], found[i + 1], tonumber(found[i + 1]), state}
  end
end
collect(KEYS[1], 'live')
collect(KEYS[2], 'dead')
collect(KEYS[5], 'delivered')
table.sort(rows, function(a, b)
  if a[3] ~= b[3] then return a[3] > b[3] end
  return tonumber(a[1]) > tonumber(b[1])
end)
local out = {}
for i = 1, math.min(limit, #rows) do
  row(out, rows[i][1], rows[i][4], rows[i][2])
end
return out
"""
)

# Entries enqueued at or after ARGV[2], newest first, at most ARGV[3]: the ``born`` index.
_SINCE = (
    _ROW
    + """
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[2], 'LIMIT', 0,
                       tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'delivered_at', 'died_at', 'created')
  if f[1] then
    row(out, id, 'delivered', f[1])
  elseif redis.call('ZSCORE', KEYS[2], id) then
    row(out, id, 'dead', f[2] or f[3] or '0')
  elseif f[3] then
    row(out, id, 'live', f[3])
  end
end
return out
"""
)

# ARGV: evidence field, fired ('1'/'0'), now, cutoff, cap. Fired once stays fired.
_TAG = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
for _, f in ipairs(stale) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #gone, 2 do redis.call('HDEL', KEYS[1], gone[i]) end
end
return 1
"""

# KEYS: schema, account. ARGV: this version's schema, this process's account ('' for none).
_BIND = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version > tonumber(ARGV[1]) then return {'newer', tostring(version)} end
if version == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then
  local owner = redis.call('GET', KEYS[2])
  if not owner then
    redis.call('SET', KEYS[2], ARGV[2])
    owner = ARGV[2]
  end
  if owner ~= ARGV[2] then return {'foreign', owner} end
end
return {'ok', ''}
"""

_RAISE_PAUSE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'until', ARGV[1], 'reason', ARGV[2], 'kind', ARGV[3],
             'token_id', ARGV[4])
  return 1
end
return 0
"""

# ARGV[1]: the kind of pause to lift, '' for any.
_CLEAR_PAUSE = """
local kind = redis.call('HGET', KEYS[2], 'kind') or 'rate_limit'
if ARGV[1] == '' or ARGV[1] == kind then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
"""


def _text(value: bytes | str) -> str:
    # The client may or may not have been created with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _score(value: float, name: str) -> str:
    # Scores go to Redis as text: Lua would print floats with only 14 significant digits.
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return repr(float(value))


def _split_ids(ids: Sequence[str]) -> list[str]:
    # [entry id, claim number or ""] pairs of the well-formed ids; the others are ignored.
    pairs: list[str] = []
    for item in ids:
        entry, sep, claim = str(item).partition(":")
        if entry.isdigit() and (claim.isdigit() if sep else True):
            pairs += [entry, claim]
    return pairs


def _claim_ids(ids: Sequence[str]) -> list[str]:
    # [entry id, claim number] pairs of the ids that name a claim: retry and dead act for the
    # current claim only, so an id without its claim number is ignored.
    pairs = _split_ids(ids)
    return [v for i in range(0, len(pairs), 2) if pairs[i + 1] for v in pairs[i : i + 2]]


_ROW_SIZE = 16


def _rows(flat: Sequence[Any]) -> list[LedgerEntry]:
    """Ledger entries from the flat rows of ``_ROW``."""
    entries = []
    for i in range(0, len(flat), _ROW_SIZE):
        state, score, name, event_id, attempts, event_time, error, reason, payload = (
            _text(v) for v in flat[i : i + 9]
        )
        fields, created, value, currency, test, device, tag = (
            _text(v) for v in flat[i + 9 : i + 16]
        )
        entries.append(
            ledger_entry(
                payload,
                event_name=name,
                event_id=event_id,
                state=EventState(state),
                attempts=int(attempts or 0),
                event_time=float(event_time) if event_time else None,
                updated_at=float(score),
                last_error=reason or error or None,
                fields=fields or None,
                created_at=float(created) if created else None,
                value=float(value) if value else None,
                currency=currency or None,
                test=None if test == "" else test == "1",
                tag=None if tag == "" else tag == "1",
                device=device or None,
            )
        )
    return entries


def _entry_ids(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(_split_ids(ids)[::2]))


class RedisOutbox:
    """An :class:`~dedupkit.outbox.base.Outbox` in Redis, shared by every host using it.

    :param url: ``redis://[:password@]host:port/db`` or ``rediss://…``.
    :param namespace: prefix of every key, to share one Redis database between shops.
    :param client: a ready :class:`redis.Redis` to use instead of connecting to ``url``; it is
        not closed by :meth:`close`, and ``url`` only names it in error messages.
    :param account: the ad account this process sends for: recorded under ``{ns}:account``
        at first use, checked against the one recorded (a
        :class:`~dedupkit.errors.ConfigurationError` when it differs), stamped on every
        stored event, and the only account whose events :meth:`claim` returns. ``None``
        binds nothing. The schema version is kept under ``{ns}:schema``: a namespace written
        by a newer dedupkit is refused.
    :raises ConfigurationError: ``url`` is not a Redis URL.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "dedupkit",
        client: redis.Redis | None = None,
        account: str | None = None,
    ) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigurationError("DEDUPKIT_QUEUE_URL is not a valid Redis URL") from exc
        self._url = url
        # Both spellings: redis-py unquotes the password before it can show up anywhere.
        self._secrets = {p for p in (parts.password, unquote(parts.password or "")) if p}
        host = parts.hostname or "localhost"
        #: Where the outbox lives, without credentials, for messages and reprs.
        self.location = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._client = client if client is not None else self._connect()
        self._namespace = namespace
        self._prefix = f"{{{namespace}}}:"
        self._entry = self._prefix + "entry:"
        self._keys = {
            name: self._prefix + name
            for name in (
                *("seq", "due", "created", "lease", "dead", "stats", "skipped", "errors"),
                *("delivered", "born", "lag", "skips", "tags", "tags_at"),
            )
        }
        self._keys["schema"] = self._prefix + "schema"
        self._keys["account"] = self._prefix + "account"
        self.account = account
        self._bound = False
        self._bind_lock = threading.Lock()
        self._keys["pause"] = self._prefix + "pause"
        self._keys["pause_info"] = self._prefix + "pause_info"
        #: (pid, timeout, client) of the client with short timeouts for timed puts.
        self._timed: tuple[int, float, redis.Redis] | None = None
        register = self._client.register_script
        self._put = register(_PUT)
        self._claim = register(_CLAIM)
        self._ack = register(_ACK)
        self._retry = register(_RETRY)
        self._dead = register(_DEAD)
        self._replay = register(_REPLAY)
        self._dead_letters = register(_DEAD_LETTERS)
        self._raise_pause = register(_RAISE_PAUSE)
        self._clear_pause = register(_CLEAR_PAUSE)
        self._recent = register(_RECENT)
        self._since = register(_SINCE)
        self._tag = register(_TAG)
        self._bind_script = register(_BIND)

    def __repr__(self) -> str:
        return f"<RedisOutbox {self.location} namespace={self._namespace!r}>"

    def _connect(self) -> redis.Redis:
        try:
            return redis.Redis.from_url(
                self._url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigurationError(
                "DEDUPKIT_QUEUE_URL must look like redis://[:password@]host:port/db"
                f" or rediss://…: {self._redact(str(exc))}"
            ) from None

    def _redis(self) -> redis.Redis:
        client = self._own_client()
        if not self._bound:
            self._bind(client)
        return client

    def _own_client(self) -> redis.Redis:
        if self._pid != os.getpid():
            # A forked child must not talk over the parent's sockets. The old client is only
            # dropped, never closed: closing could shut the sockets down for the parent too.
            with self._lock:
                if self._pid != os.getpid():
                    if self._owns_client:
                        self._client = self._connect()
                    self._pid = os.getpid()
        return self._client

    def _bind(self, client: redis.Redis) -> None:
        """Check the namespace's schema version and owner once, recording them if new
        (through ``client``: a timed put's own, so that it stays bounded)."""
        with self._bind_lock:
            if self._bound:
                return
            keys = [self._keys["schema"], self._keys["account"]]
            with self._failing("open the outbox"):
                found = self._bind_script(
                    keys=keys, args=[SCHEMA_VERSION, self.account or ""], client=client
                )
            verdict, value = (_text(v) for v in found)
            if verdict == "newer":
                raise NewerOutbox(
                    f"the dedupkit outbox at {self.location} namespace {self._namespace!r} was "
                    f"written by a newer dedupkit (schema version {value}; this one knows "
                    f"{SCHEMA_VERSION}): upgrade dedupkit, or use another "
                    "DEDUPKIT_QUEUE_NAMESPACE"
                )
            if verdict == "foreign":
                raise foreign_outbox(
                    f"at {self.location} (namespace {self._namespace!r})",
                    value,
                    str(self.account),
                )
            self._bound = True

    def _redact(self, message: str) -> str:
        # A Redis password may be short: replaced however short, then the usual rules.
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
        return redact(message, limit=1000)

    @contextlib.contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            message = self._redact(f"{type(exc).__name__}: {exc}")
            raise OutboxError(
                f"Redis outbox at {self.location} could not {action}: {message}"
            ) from exc

    def _timed_client(self, timeout: float) -> redis.Redis:
        """A client like the main one, whose socket timeouts are ``timeout`` seconds.

        Kept for the next call with the same ``timeout`` (the request path always passes the
        same one); replaced, and closed, when another is asked for.
        """
        base = self._own_client().connection_pool
        with self._lock:
            timed = self._timed
            if timed is not None and timed[:2] == (os.getpid(), timeout):
                if not self._bound:
                    self._bind(timed[2])
                return timed[2]
            kwargs = {**base.connection_kwargs}
            kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
            pool = redis.ConnectionPool(connection_class=base.connection_class, **kwargs)
            client = redis.Redis(connection_pool=pool)
            self._timed = (os.getpid(), timeout, client)
        # One of a forked parent is only dropped, as in _redis().
        if timed is not None and timed[0] == os.getpid():
            timed[2].close()
        if not self._bound:
            self._bind(client)
        return client

    def _run(
        self,
        script: Script,
        action: str,
        keys: Sequence[str],
        args: Sequence[Any],
        client: redis.Redis | None = None,
    ) -> Any:
        with self._failing(action):
            return script(keys=keys, args=args, client=client or self._redis())

    def _error_record(self, when: float, message: str) -> str:
        return json.dumps([when, message[:MAX_ERROR_LENGTH]])

    def put(
        self,
        payload: Mapping[str, Any],
        *,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
    ) -> bool:
        """Store an event; ``False`` if ``(event_name, event_id)`` was already stored.

        :param timeout: bound the call by socket timeouts of this many seconds (on a second
            client kept for such calls), instead of :data:`SOCKET_TIMEOUT`; then raise
            :class:`OutboxError`. A put that timed out may still have been stored.
        :raises ValueError: for a payload that is not an event (see
            :func:`~dedupkit.outbox.base.stored_entry`).
        """
        name, event_id, body = stored_entry(payload)
        digest = hashlib.sha256(json.dumps([name, event_id]).encode()).hexdigest()
        now = time.time() if now is None else now
        keys = [self._prefix + "idem:" + digest, self._keys["seq"]]
        keys += [self._keys["due"], self._keys["created"], self._keys["stats"], self._keys["born"]]
        event_time = event_time_of(payload)
        fields, value, currency = summary_of(payload)
        args: list[Any] = [self._entry, body, name, event_id, _score(now, "now"), IDEMPOTENCY_TTL]
        args.append("" if event_time is None else repr(event_time))
        args += [fields, "" if value is None else repr(value), currency or ""]
        args += [_score(now - BORN_TTL, "now"), BORN_KEPT, self.account or ""]
        client = self._redis() if timeout is None else self._timed_client(timeout)
        if tag is None:
            return bool(self._run(self._put, "store an event", keys, args, client))
        # One MULTI/EXEC: the event and its tag evidence are one write, whole or not at all.
        with self._failing("store an event"):
            pipe = client.pipeline(transaction=True)
            self._put(keys=keys, args=args, client=pipe)
            self._queue_tag(pipe, name, event_id, tag, now)
            stored, _ = pipe.execute()
        return bool(stored)

    def _queue_tag(self, client: Any, name: str, event_id: str, fired: bool, now: float) -> Any:
        keys = [self._keys["tags"], self._keys["tags_at"]]
        args = [f"{name}\n{event_id}", "1" if fired else "0", _score(now, "now")]
        args += [_score(now - EVIDENCE_TTL, "now"), str(EVIDENCE_KEPT)]
        return self._tag(keys=keys, args=args, client=client)

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries (pending, or in flight past their lease)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = time.time() if now is None else now
        keys = [self._keys["due"], self._keys["created"], self._keys["lease"]]
        args = [self._entry, _score(now, "now"), _score(now + lease, "lease"), limit]
        args.append(self.account or "")
        flat = self._run(self._claim, "claim events", keys, args)
        return [
            Claimed(
                id=_text(flat[i]),
                attempts=int(flat[i + 1]),
                raw=_text(flat[i + 2]),
                event_time=float(flat[i + 3]) if flat[i + 3] else None,
            )
            for i in range(0, len(flat), 4)
        ]

    def ack(
        self,
        ids: Sequence[str],
        *,
        test: bool | None = None,
        devices: Mapping[str, str] | None = None,
    ) -> None:
        """Mark claimed entries delivered (from any claim, even over a dead letter): their
        payloads go, their summaries (and device labels) stay :data:`DELIVERED_TTL` for the
        ledger and coverage."""
        entries = _entry_ids(ids)
        if entries:
            now = time.time()
            names = ("due", "created", "lease", "dead", "stats", "delivered", "lag")
            keys = [self._keys[k] for k in names]
            flag = "" if test is None else str(int(test))
            args = [self._entry, _score(now, "now"), flag, DELIVERED_TTL]
            args += [_score(now - DELIVERED_TTL, "now"), DELIVERED_KEPT]
            labels = {
                entry: label[:MAX_DEVICE_LENGTH]
                for item, label in (devices or {}).items()
                for entry in _entry_ids([item])
                if isinstance(label, str) and label
            }
            args += [",".join(map(repr, LAG_BUCKETS)), json.dumps(labels), *entries]
            self._run(self._ack, "acknowledge events", keys, args)

    def retry(
        self, ids: Sequence[str], *, not_before: float, error: str, sent: bool = True
    ) -> None:
        """Give entries back, due again at ``not_before`` (attempts + 1 when ``sent``);
        current claims only."""
        pairs = _claim_ids(ids)
        if pairs:
            keys = [self._keys[k] for k in ("lease", "due", "created", "errors")]
            args = [self._entry, _score(not_before, "not_before"), error[:MAX_ERROR_LENGTH]]
            args += [self._error_record(time.time(), error), str(LAST_ERRORS_KEPT)]
            args += [str(int(sent)), *pairs]
            self._run(self._retry, "reschedule events", keys, args)

    def dead(
        self, ids: Sequence[str], *, reason: str, now: float | None = None, sent: bool = True
    ) -> None:
        """Move entries to the dead letters with ``reason``; current claims only."""
        pairs = _claim_ids(ids)
        if pairs:
            now = time.time() if now is None else now
            keys = [self._keys[k] for k in ("lease", "dead", "created", "errors", "stats")]
            args = [self._entry, _score(now, "now"), reason[:MAX_ERROR_LENGTH]]
            args += [self._error_record(now, reason), str(LAST_ERRORS_KEPT), str(int(sent)), *pairs]
            self._run(self._dead, "dead-letter events", keys, args)

    def set_pause_until(
        self, when: float, *, reason: str = "", kind: str = "rate_limit", token_id: str = ""
    ) -> None:
        """Raise the shared pause to ``when`` with why; a lower ``when`` changes nothing."""
        keys = [self._keys["pause"], self._keys["pause_info"]]
        args = [_score(when, "when"), reason[:MAX_MESSAGE_LENGTH], kind, token_id]
        self._run(self._raise_pause, "set the pause", keys, args)

    def pause(self, *, now: float | None = None) -> Pause | None:
        """The pause in force with its reason, ``None`` when none (see the protocol)."""
        with self._failing("read the pause"):
            pipe = self._redis().pipeline(transaction=True)
            pipe.get(self._keys["pause"])
            pipe.hgetall(self._keys["pause_info"])
            until_text, info = pipe.execute()
        until = float(_text(until_text)) if until_text is not None else 0.0
        if until <= (time.time() if now is None else now):
            return None
        fields = {_text(k): _text(v) for k, v in info.items()}
        return Pause(
            until=until,
            reason=fields.get("reason", ""),
            kind=fields.get("kind", "rate_limit"),
            token_id=fields.get("token_id", ""),
        )

    def clear_pause(self, *, kind: str | None = None) -> None:
        """Lift the pause, whatever it was, or only one of ``kind``."""
        keys = [self._keys["pause"], self._keys["pause_info"]]
        self._run(self._clear_pause, "clear the pause", keys, [kind or ""])

    def record_skip(
        self,
        reason: str,
        *,
        event_name: str | None = None,
        event_id: str | None = None,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
        count: int = 1,
    ) -> None:
        """Count a skipped event (and store its tag evidence) in one MULTI/EXEC; with its
        name or id, remember it among the last few."""
        when = time.time() if now is None else now
        client = self._redis() if timeout is None else self._timed_client(timeout)
        with self._failing("count a skipped event"):
            pipe = client.pipeline(transaction=True)
            pipe.hincrby(self._keys["skipped"], reason, count)
            if event_name is not None or event_id is not None:
                pipe.lpush(self._keys["skips"], json.dumps([when, reason, event_name, event_id]))
                pipe.ltrim(self._keys["skips"], 0, SKIPS_KEPT - 1)
            if tag is not None and event_name is not None and event_id is not None:
                self._queue_tag(pipe, event_name, event_id, tag, when)
            pipe.execute()

    def recent_skips(self, limit: int = 100) -> list[Skip]:
        """The skipped events recorded with a name or id, newest first."""
        if limit <= 0:
            return []
        with self._failing("list skipped events"):
            found = self._redis().lrange(self._keys["skips"], 0, min(limit, SKIPS_KEPT) - 1)
        skips = []
        for item in found:
            at, reason, name, event_id = json.loads(item)
            skips.append(Skip(float(at), str(reason), name, event_id))
        return skips

    def record_tag(
        self,
        event_name: str,
        event_id: str,
        fired: bool,
        *,
        now: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Remember the tag evidence of one event; past ``EVIDENCE_KEPT`` records, or after
        ``EVIDENCE_TTL``, the oldest go."""
        now = time.time() if now is None else now
        client = self._redis() if timeout is None else self._timed_client(timeout)
        with self._failing("store tag evidence"):
            self._queue_tag(client, event_name, event_id, fired, now)

    def stats(self, *, now: float | None = None) -> OutboxStats:
        now = time.time() if now is None else now
        k = self._keys
        with self._failing("read its statistics"):
            pipe = self._redis().pipeline(transaction=True)
            pipe.zcard(k["due"])
            pipe.zcard(k["lease"])
            pipe.hget(k["stats"], "delivered")
            pipe.zcard(k["dead"])
            pipe.zrange(k["created"], 0, 0, withscores=True)
            pipe.hgetall(k["skipped"])
            pipe.lrange(k["errors"], 0, LAST_ERRORS_KEPT - 1)
            pipe.hgetall(k["stats"])
            pipe.hgetall(k["lag"])
            pending, in_flight, delivered, dead, oldest, skipped, errors, counts, lag = (
                pipe.execute()
            )
        totals = {_text(key): int(value) for key, value in counts.items()}
        lags = {_text(key): _text(value) for key, value in lag.items()}
        last_errors = [(float(w), str(m)) for w, m in (json.loads(e) for e in errors)]
        return OutboxStats(
            pending=int(pending),
            in_flight=int(in_flight),
            delivered=int(delivered or 0),
            dead=int(dead),
            oldest_pending_age=max(0.0, now - float(oldest[0][1])) if oldest else None,
            skipped={_text(r): int(n) for r, n in skipped.items()},
            last_errors=last_errors,
            duplicates=totals.get(DUPLICATE, 0),
            lag_counts=[int(lags.get(str(i), 0)) for i in range(len(LAG_BUCKETS) + 1)],
            lag_sum=float(lags.get("sum", 0.0)),
            totals={outcome: totals.get(outcome, 0) for outcome in TOTALS},
        )

    def dead_letters(
        self, limit: int = 100, *, reason: str | None = None, since: float | None = None
    ) -> list[DeadLetter]:
        """Dead letters, most recent first; ``reason`` matches exactly, ``since`` is inclusive.

        One read-only script; with ``reason`` it reads the dead letters it skips too.
        """
        if limit <= 0:
            return []
        flat = self._select_dead(limit, reason, since, "list dead letters")
        return [
            DeadLetter(
                id=_text(flat[i]),
                event_name=_text(flat[i + 1]),
                event_id=_text(flat[i + 2]),
                reason=_text(flat[i + 3]),
                died_at=float(flat[i + 4] or 0),
                attempts=int(flat[i + 5] or 0),
            )
            for i in range(0, len(flat), 6)
        ]

    def count_dead(self, *, reason: str | None = None, since: float | None = None) -> int:
        """How many dead letters match (the same filters as :meth:`dead_letters`)."""
        if reason is None:
            low = "-inf" if since is None else _score(since, "since")
            with self._failing("count dead letters"):
                return int(self._redis().zcount(self._keys["dead"], low, "+inf"))
        return int(self._select_dead(0, reason, since, "count dead letters"))

    def _select_dead(self, limit: int, reason: str | None, since: float | None, action: str) -> Any:
        low = "-inf" if since is None else _score(since, "since")
        # Stored reasons are cut to MAX_ERROR_LENGTH: so is the one looked for.
        wanted = "" if reason is None else reason[:MAX_ERROR_LENGTH]
        args = [self._entry, limit, low, wanted, "0" if reason is None else "1", _CHUNK]
        return self._run(self._dead_letters, action, [self._keys["dead"]], args)

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """The newest entries, newest first, at most ``limit``, with their tag evidence.

        Delivered entries are listed for :data:`DELIVERED_TTL` (their summaries; the payload
        goes at ack). Redis keeps no change time for live entries: a pending or in-flight
        entry is dated (``updated_at``) and ordered by when it was enqueued, a dead letter by
        when it died, a delivered one by its ack. One read-only script: at most ``3 * limit``
        ids and ``limit`` entries.
        """
        if limit <= 0:
            return []
        keys = [self._keys[k] for k in ("created", "dead", "lease", "tags", "delivered")]
        flat = self._run(self._recent, "list recent entries", keys, [self._entry, limit])
        return _rows(flat)

    def entries_since(self, since: float, *, limit: int = 20_000) -> list[LedgerEntry]:
        """Entries enqueued at or after ``since``, newest first (delivered ones for
        :data:`DELIVERED_TTL`); one read-only script over the ``born`` index."""
        if limit <= 0:
            return []
        keys = [self._keys[k] for k in ("born", "dead", "lease", "tags")]
        args = [self._entry, _score(since, "since"), limit]
        return _rows(self._run(self._since, "list entries", keys, args))

    def replay_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        now: float | None = None,
        as_offline: bool = False,
    ) -> int:
        """Make dead letters pending again (all when ``ids`` is None); see the protocol.

        With ``as_offline`` the payloads are read, rewritten in Python with the one encoder
        and replayed by ``_CHUNK``; a letter acked or replayed meanwhile is skipped.
        """
        entries = [] if ids is None else _entry_ids(ids)
        if ids is not None and not entries:
            return 0
        now_score = _score(time.time() if now is None else now, "now")
        keys = [self._keys[k] for k in ("due", "created", "dead", "stats")]
        if not as_offline:
            args = [self._entry, now_score, *(["all"] if ids is None else ["ids", *entries])]
            return int(self._run(self._replay, "replay dead letters", keys, args))
        if ids is None:
            with self._failing("list dead letters"):
                found = self._redis().zrange(self._keys["dead"], 0, -1)
            entries = [_text(i) for i in found if isinstance(i, (bytes, str))]
        replayed = 0
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start : start + _CHUNK]
            with self._failing("read dead letters"):
                pipe = self._redis().pipeline(transaction=False)
                for entry in chunk:
                    pipe.hget(self._entry + entry, "payload")
                payloads = pipe.execute()
            pairs = [
                value
                for entry, raw in zip(chunk, payloads, strict=True)
                if raw is not None
                for value in (entry, as_offline_text(_text(raw)))
            ]
            if pairs:
                args = [self._entry, now_score, "payloads", *pairs]
                replayed += int(self._run(self._replay, "replay dead letters", keys, args))
        return replayed

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Nothing to do: entries are deleted when acked and their idempotency keys expire
        after :data:`IDEMPOTENCY_TTL` by themselves."""
        return 0

    def close(self) -> None:
        """Disconnect (the client passed in, if any, is left open)."""
        timed, self._timed = self._timed, None
        if timed is not None and timed[0] == os.getpid():
            timed[2].close()
        if self._owns_client and self._pid == os.getpid():
            self._client.close()
