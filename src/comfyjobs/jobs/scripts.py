"""The Lua scripts that change jobs and their queue, each one atomic: a record, its events, its place in
line (jobs.queue) and its ticket (jobs.delivery) can never disagree."""

from __future__ import annotations

import json

from comfyjobs import keys, metrics
from comfyjobs.jobs import queue
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


# Lua: ``update_job(k, id, expect, now, qp, ticket, fields)`` applies ``fields`` (a flat list: field,
# value, ...) to job ``id`` unless its record is gone (-1), terminal or does not hold ``expect`` (0), with
# everything that goes with the change (1): its event, its place in line and among the running jobs, the
# finished metric, its webhook. ``k``: the keys {job, events, waiting, departures, running, by_tenant,
# list (the queue's Celery list)}; ``expect``: fields the record must hold (JSON object of encoded values)
# or ""; ``now``: the time (score); ``qp``: the queue key prefix; ``ticket``: a Celery message to send if
# the job goes back in line, or "". ``appended``: the id of the event it last appended.
UPDATE_FUNCTION = _metrics(
    _statuses(
        """
local WEBHOOK_EVENTS = {[$STARTED] = 'started', [$SUCCESS] = 'succeeded', [$FAILURE] = 'failed',
                        [$CANCELLED] = 'cancelled'}
local TERMINAL = {$TERMINAL}
local function is_terminal(s)
  for _, t in ipairs(TERMINAL) do if s == t then return true end end
  return false
end
local appended = false
local function update_job(k, id, expect, now, qp, ticket, fields)
  local status = redis.call('HGET', k.job, 'status')
  if not status then return -1 end
  if is_terminal(status) then return 0 end
  if expect ~= '' then
    for name, value in pairs(cjson.decode(expect)) do
      if redis.call('HGET', k.job, name) ~= value then return 0 end
    end
  end
  redis.call('HSET', k.job, unpack(fields))
  local changes = {}
  for i = 1, #fields, 2 do changes[fields[i]] = fields[i + 1] end
  appended = redis.call('XADD', k.events, '*', 'changes', cjson.encode(changes))
  redis.call('PUBLISH', $CHANGES_OF .. k.events, k.events)
  local new = changes['status']
  local tenant = redis.call('HGET', k.job, 'tenant') or 'null'
  local priority = redis.call('HGET', k.job, 'priority') or '5'
  local by_tenant = tenant .. '|' .. id
  if new == $PENDING then
    if redis.call('ZADD', k.waiting, now, id) == 1 then
      local seq = tonumber(redis.call('HGET', k.job, 'queue_seq')) or 0
      enter_queue(qp, id, tenant, priority, seq, job_class(k.job))  -- its old place: it waited its turn
      if ticket ~= '' then redis.call('LPUSH', k.list, ticket) end
    end
    redis.call('ZADD', k.by_tenant, 0, by_tenant)
    redis.call('ZREM', k.running, id)
  elseif new then
    if redis.call('ZREM', k.waiting, id) == 1 then
      leave_queue(qp, id, tenant, priority, job_class(k.job))
      redis.call('XADD', k.departures, 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', id)
      redis.call('PUBLISH', $CHANGES_OF .. k.departures, k.departures)
    end
    redis.call('ZREM', k.by_tenant, by_tenant)
    if new == $STARTED or new == $PROGRESS then
      redis.call('ZADD', k.running, 'NX', now, id)
    elseif is_terminal(new) then
      redis.call('ZREM', k.running, id)
      local workflow = cjson.decode(redis.call('HGET', k.job, 'workflow_id'))
      local labels = cjson.encode({workflow, cjson.decode(tenant), cjson.decode(new)})
      redis.call('HINCRBY', $FINISHED_METRIC, labels, 1)
      local version = redis.call('HGET', k.job, 'catalog_version')  -- (keys.catalog_jobs)
      if version and version ~= 'null' then
        redis.call('ZREM', qp .. 'catalog-jobs:' .. cjson.decode(version), id)
      end
    end
    -- Its webhook's delivery, with the task as it is now, in the same step as the change (webhooks).
    local kind = WEBHOOK_EVENTS[new]
    local hook = kind and redis.call('HGET', k.job, 'webhook_url')
    if hook and hook ~= 'null' then
      local msg = 'msg_' .. id .. '_' .. kind
      if kind == 'started' then msg = msg .. '_' .. (redis.call('HGET', k.job, 'attempts') or '0') end
      if redis.call('EXISTS', $WEBHOOK_PREFIX .. msg) == 0 then
        redis.call('HSET', $WEBHOOK_PREFIX .. msg, 'task_id', id, 'type', 'task.' .. kind, 'at', now,
                   'record', cjson.encode(redis.call('HGETALL', k.job)), 'attempts', 0)
        redis.call('ZADD', $WEBHOOKS_DUE, now, msg)
        redis.call('PUBLISH', $CHANGES_OF .. $WEBHOOKS_DUE, $WEBHOOKS_DUE)
      end
    end
  end
  return 1
end
"""
    )
)

# KEYS[1] job hash, [2] job events stream, [3] queue waiting set, [4] queue departures, [5] running set,
# [6] waiting-by-tenant set, [7] the queue's Celery list
# ARGV[1] task id, [2] fields the record must hold (JSON object of encoded values) or "", [3] now (score),
# [4] queue key prefix, [5] a ticket (Celery message) to send if the job goes back in line, or "",
# then field, value, field, value, ...
UPDATE_UNLESS_TERMINAL = lua(
    QUEUE_FUNCTIONS
    + UPDATE_FUNCTION
    + """
local k = {job = KEYS[1], events = KEYS[2], waiting = KEYS[3], departures = KEYS[4], running = KEYS[5],
           by_tenant = KEYS[6], list = KEYS[7]}
return update_job(k, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {unpack(ARGV, 6)})
""",
    DEPARTURES_MAXLEN,
)

# The take (jobs.queue ``CLAIM``, whose arguments come first), which may also start the job it takes, as
# ``update_job`` would (STARTED, one more attempt, its outputs' deletion scheduled), unless its record is
# gone, finished or out of attempts. ARGV[16] MAX_ATTEMPTS (0: take only), [17] the job events key
# prefix, [18] the start's fields (JSON object of encoded values; "attempts" is added), [19] the object
# expiry set, [20] the job's outputs prefix as a format ("%s": the task id), [21] when they go (epoch s).
# Returns {task id, its record's fields as taken (HGETALL), 1 if started (and its STARTED event's id), else
# 0}, or false.
CLAIM = lua(
    QUEUE_FUNCTIONS
    + UPDATE_FUNCTION
    + """
local function taken(id, fields)
  local job = ARGV[8] .. id
  local max_attempts = tonumber(ARGV[16] or '0')
  local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0') or 0
  if #fields == 0 or max_attempts == 0 or attempts >= max_attempts then return {id, fields, 0} end
  local start = {}
  for name, value in pairs(cjson.decode(ARGV[18])) do start[#start + 1] = name; start[#start + 1] = value end
  start[#start + 1] = 'attempts'
  start[#start + 1] = tostring(attempts + 1)
  local k = {job = job, events = ARGV[17] .. id, waiting = ARGV[6], departures = ARGV[5],
             running = ARGV[13], by_tenant = ARGV[7], list = ARGV[14]}
  if update_job(k, id, '', ARGV[12], ARGV[1], '', start) ~= 1 then return {id, fields, 0} end
  redis.call('ZADD', ARGV[19], 'GT', ARGV[21], string.format(ARGV[20], id))
  return {id, fields, 1, appended}
end
"""
    + queue.CLAIM,
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
local version = redis.call('HGET', KEYS[1], 'catalog_version')  -- its version is kept while it lives
if version and version ~= 'null' then
  redis.call('ZADD', ARGV[10] .. 'catalog-jobs:' .. cjson.decode(version), ARGV[3], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'changes', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', $CHANGES_OF .. KEYS[2], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
enter_queue(ARGV[10], ARGV[1], ARGV[7], ARGV[11], seq, job_class(KEYS[1]))
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

# A job's times (jobs.worker_store): KEYS[1] the run times hash; ARGV[1] the workflow id, [2] its run in
# seconds (a success's) or "", [3] the weight of a new run time in the moving average, then per histogram
# observation (metrics.Histogram.observation) its key, bucket field, sum field and value.
RECORD_TIMES = """
if ARGV[2] ~= '' then
  for _, field in ipairs({ARGV[1], '*'}) do
    local old = tonumber(redis.call('HGET', KEYS[1], field))
    local new = tonumber(ARGV[2])
    if old then new = old + tonumber(ARGV[3]) * (new - old) end
    redis.call('HSET', KEYS[1], field, tostring(new))
  end
end
for i = 4, #ARGV, 4 do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], 1)
  redis.call('HINCRBYFLOAT', ARGV[i], ARGV[i + 2], ARGV[i + 3])
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
    "CLAIM",
    "DEPARTURES_MAXLEN",
    "RECORD_TIMES",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "SET_IF_EXISTS",
    "UPDATE_UNLESS_TERMINAL",
]
