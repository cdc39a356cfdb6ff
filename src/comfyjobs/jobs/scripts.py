"""The Lua scripts that change jobs and their queue, each one atomic: a record, its events, its place in
line (jobs.queue) and its ticket (jobs.delivery) can never disagree."""

from __future__ import annotations

import json

from comfyjobs import keys, metrics
from comfyjobs.jobs.queue import QUEUE_FUNCTIONS, lua
from comfyjobs.jobs.record import TERMINAL_STATUSES, JobStatus

DEPARTURES_MAXLEN = 1000  # readers only need "someone left since I looked", not the history


def _statuses(script: str) -> str:
    # Status values are stored JSON-encoded ("\"SUCCESS\""), and written here as Lua string literals.
    return (
        script.replace("$TERMINAL", ", ".join(json.dumps(json.dumps(s.value)) for s in TERMINAL_STATUSES))
        .replace("$PENDING", json.dumps(json.dumps(JobStatus.PENDING.value)))
        .replace("$STARTED", json.dumps(json.dumps(JobStatus.STARTED.value)))
        .replace("$PROGRESS", json.dumps(json.dumps(JobStatus.PROGRESS.value)))
        .replace("$SUCCESS", json.dumps(json.dumps(JobStatus.SUCCESS.value)))
        .replace("$FAILURE", json.dumps(json.dumps(JobStatus.FAILURE.value)))
        .replace("$CANCELLED", json.dumps(json.dumps(JobStatus.CANCELLED.value)))
        .replace("$WEBHOOKS_DUE", json.dumps(keys.WEBHOOKS_DUE))
        .replace("$WEBHOOK_PREFIX", json.dumps(keys.WEBHOOK_PREFIX))
    )


def _metrics(script: str) -> str:
    return script.replace("$SUBMITTED_METRIC", json.dumps(keys.metric(metrics.SUBMITTED))).replace(
        "$FINISHED_METRIC", json.dumps(keys.metric(metrics.FINISHED))
    )


# KEYS[1] job hash, [2] job events stream, [3] queue waiting set, [4] queue departures, [5] running set,
# [6] waiting-by-tenant set, [7] the queue's Celery list
# ARGV[1] task id, [2] fields the record must hold (JSON object of encoded values) or "", [3] now (score),
# [4] queue key prefix, [5] a ticket (Celery message) to send if the job goes back in line, or "",
# then field, value, field, value, ...
UPDATE_UNLESS_TERMINAL = lua(
    _metrics(
        _statuses(
            QUEUE_FUNCTIONS
            + """
local WEBHOOK_EVENTS = {[$STARTED] = 'started', [$SUCCESS] = 'succeeded', [$FAILURE] = 'failed',
                        [$CANCELLED] = 'cancelled'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local terminal = {$TERMINAL}
local function is_terminal(s)
  for _, t in ipairs(terminal) do if s == t then return true end end
  return false
end
if is_terminal(status) then return 0 end
if ARGV[2] ~= '' then
  for name, value in pairs(cjson.decode(ARGV[2])) do
    if redis.call('HGET', KEYS[1], name) ~= value then return 0 end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
local changes = {}
for i = 6, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
redis.call('XADD', KEYS[2], '*', 'changes', cjson.encode(changes))
redis.call('PUBLISH', $CHANGES, KEYS[2])
local new = changes['status']
local tenant = redis.call('HGET', KEYS[1], 'tenant') or 'null'
local priority = redis.call('HGET', KEYS[1], 'priority') or '5'
local by_tenant = tenant .. '|' .. ARGV[1]
if new == $PENDING then
  if redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) == 1 then
    local seq = tonumber(redis.call('HGET', KEYS[1], 'queue_seq')) or 0
    enter_queue(ARGV[4], ARGV[1], tenant, priority, seq)  -- its old place: it waited its turn before
    if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[7], ARGV[5]) end
  end
  redis.call('ZADD', KEYS[6], 0, by_tenant)
  redis.call('ZREM', KEYS[5], ARGV[1])
elseif new then
  if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
    leave_queue(ARGV[4], ARGV[1], tenant, priority)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', ARGV[1])
    redis.call('PUBLISH', $CHANGES, KEYS[4])
  end
  redis.call('ZREM', KEYS[6], by_tenant)
  if new == $STARTED or new == $PROGRESS then
    redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1])
  elseif is_terminal(new) then
    redis.call('ZREM', KEYS[5], ARGV[1])
    local workflow = cjson.decode(redis.call('HGET', KEYS[1], 'workflow_id'))
    local labels = cjson.encode({workflow, cjson.decode(tenant), cjson.decode(new)})
    redis.call('HINCRBY', $FINISHED_METRIC, labels, 1)
  end
  -- Its webhook's delivery, with the task as it is now, in the same step as the change (webhooks).
  local kind = WEBHOOK_EVENTS[new]
  local hook = kind and redis.call('HGET', KEYS[1], 'webhook_url')
  if hook and hook ~= 'null' then
    local id = 'msg_' .. ARGV[1] .. '_' .. kind
    if kind == 'started' then id = id .. '_' .. (redis.call('HGET', KEYS[1], 'attempts') or '0') end
    if redis.call('EXISTS', $WEBHOOK_PREFIX .. id) == 0 then
      redis.call('HSET', $WEBHOOK_PREFIX .. id, 'task_id', ARGV[1], 'type', 'task.' .. kind, 'at', ARGV[3],
                 'record', cjson.encode(redis.call('HGETALL', KEYS[1])), 'attempts', 0)
      redis.call('ZADD', $WEBHOOKS_DUE, ARGV[3], id)
      redis.call('PUBLISH', $CHANGES, $WEBHOOKS_DUE)
    end
  end
end
return 1
"""
        )
    ),
    DEPARTURES_MAXLEN,
)

# KEYS[1] job hash, [2] job events stream, [3] queue waiting set, [4] idempotency key or "",
# [5] waiting-by-tenant set, [6] the queue's Celery list, [7] the tenant's jobs, [8] the queue's sequence
# ARGV[1] task id, [2] ttl_s, [3] score, [4] max waiting (0: no limit), [5] idempotency value,
# [6] the creation event's JSON, [7] the tenant (JSON), [8] max waiting per tenant (0: no limit),
# [9] a ticket (Celery message), [10] queue key prefix, [11] priority, then field, value, ...
ADMIT = lua(
    _metrics(
        QUEUE_FUNCTIONS
        + """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'duplicate', existing} end
end
local waiting = redis.call('ZCARD', KEYS[3])
if tonumber(ARGV[4]) > 0 and waiting >= tonumber(ARGV[4]) then return {'full', tostring(waiting)} end
if tonumber(ARGV[8]) > 0 then
  local mine = redis.call('ZLEXCOUNT', KEYS[5], '[' .. ARGV[7] .. '|', '[' .. ARGV[7] .. '|\\255')
  if mine >= tonumber(ARGV[8]) then return {'tenant_full', tostring(mine)} end
end
local seq = redis.call('INCR', KEYS[8])
redis.call('ZADD', KEYS[5], 0, ARGV[7] .. '|' .. ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
redis.call('HSET', KEYS[1], 'queue_seq', tostring(seq))
local workflow = cjson.decode(redis.call('HGET', KEYS[1], 'workflow_id'))
redis.call('HINCRBY', $SUBMITTED_METRIC, cjson.encode({workflow, cjson.decode(ARGV[7])}), 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'changes', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', $CHANGES, KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
enter_queue(ARGV[10], ARGV[1], ARGV[7], ARGV[11], seq)
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[2]) end
redis.call('LPUSH', KEYS[6], ARGV[9])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[7], ARGV[2])
return {'created', ''}
"""
    ),
    DEPARTURES_MAXLEN,
)

# KEYS[1] lease; ARGV[1] owner, ARGV[2] ttl in ms. Taken if free; kept if this owner has it already (a
# claim takes the lease with the job). Only the owner may renew or release.
ACQUIRE_LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS[1] run times hash; ARGV[1] workflow id, [2] seconds, [3] weight of the new value
RECORD_RUN_TIME = """
for _, field in ipairs({ARGV[1], '*'}) do
  local old = tonumber(redis.call('HGET', KEYS[1], field))
  local new = tonumber(ARGV[2])
  if old then new = old + tonumber(ARGV[3]) * (new - old) end
  redis.call('HSET', KEYS[1], field, tostring(new))
end
"""

SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

__all__ = [
    "ACQUIRE_LEASE",
    "ADMIT",
    "DEPARTURES_MAXLEN",
    "RECORD_RUN_TIME",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "SET_IF_EXISTS",
    "UPDATE_UNLESS_TERMINAL",
]
