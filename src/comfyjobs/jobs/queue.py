"""The one queue of truth: which waiting job a worker takes next, and where a job stands in line.

Structure, per queue (keys in comfyjobs.keys), kept only by the Lua scripts built here and in jobs.store:

- a **lane** per (priority, tenant): a sorted set of that tenant's waiting jobs at that priority, scored by
  the job's sequence number (taken once, at admission: a job put back in line keeps its place);
- the **turns** per priority: a list of the tenants with a non-empty lane there, rotated on every take, so
  tenants of equal priority take turns (round robin): one tenant's 10,000 jobs delay another's single job
  by at most one job per taker;
- the **depths**: a hash, priority -> jobs waiting there.

A take (``CLAIM``) looks at the highest priority with turns, rotates its turns list, and pops the head of
that tenant's lane: O(log n). A job's position (``POSITION``) is the jobs of higher priorities plus, at
its own, min(lane size, its rank) of each tenant's lane, plus one for each tenant ahead of its own in the
turn order still holding more than its rank: O(priorities + tenants at its priority), never a scan of
the jobs. Celery only carries *tickets* (see jobs.delivery): one per job put in line, each telling a
worker to take the best waiting job now; nothing reads Celery's list but its length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from comfyjobs import keys
from comfyjobs.manifests.model_values import ON_DEMAND

PRIORITY_MIN = 0
PRIORITY_MAX = 9
PRIORITY_DEFAULT = 5
Priority = Annotated[
    int,
    Field(
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="0-9, higher first (default 5); FIFO within a priority, tenants taking turns. "
        "TENANT_MAX_PRIORITY is the highest a tenant's key may ask for.",
    ),
]

# Lua: functions over the lanes, turns and depths of the queue whose key prefix is `qp` (keys.queue_prefix).
# `tenant` is the record's tenant as stored (JSON text: "\"alice\"" or "null"); `p` a priority (string).
QUEUE_FUNCTIONS = """
local function lane_key(qp, p, tenant) return qp .. 'lane:' .. p .. ':' .. tenant end
local function turns_key(qp, p) return qp .. 'turns:' .. p end
local function clane_key(qp, p, tenant, cls) return qp .. 'clane:' .. p .. ':' .. tenant .. ':' .. cls end
local function classes_key(qp, p, tenant) return qp .. 'classes:' .. p .. ':' .. tenant end
local function job_class(job)
  local workflow = cjson.decode(redis.call('HGET', job, 'workflow_id') or '""')
  local version = redis.call('HGET', job, 'catalog_version')
  if version and version ~= 'null' then return workflow .. '@' .. cjson.decode(version) end
  return workflow .. '@'
end
local function enter_queue(qp, id, tenant, p, seq, cls)
  local lane = lane_key(qp, p, tenant)
  redis.call('ZADD', lane, seq, id)
  if redis.call('ZCARD', lane) == 1 then redis.call('RPUSH', turns_key(qp, p), tenant) end
  redis.call('ZADD', clane_key(qp, p, tenant, cls), seq, id)
  redis.call('SADD', classes_key(qp, p, tenant), cls)
  redis.call('HINCRBY', qp .. 'depths', p, 1)
  redis.call('PUBLISH', qp .. 'arrivals', cls)
end
local function leave_class(qp, id, tenant, p, cls)
  local lane = clane_key(qp, p, tenant, cls)
  redis.call('ZREM', lane, id)
  if redis.call('ZCARD', lane) == 0 then redis.call('SREM', classes_key(qp, p, tenant), cls) end
end
local function leave_queue(qp, id, tenant, p, cls)
  local lane = lane_key(qp, p, tenant)
  if redis.call('ZREM', lane, id) == 1 then
    redis.call('HINCRBY', qp .. 'depths', p, -1)
    if redis.call('ZCARD', lane) == 0 then redis.call('LREM', turns_key(qp, p), 0, tenant) end
    leave_class(qp, id, tenant, p, cls)
  end
end
"""

# ARGV[1] queue prefix, [2] worker id (the lease's owner), [3] lease ttl in ms, [4] the lease key prefix,
# [5] the departures stream, [6] the waiting set, [7] the waiting-by-tenant set, [8] the job key prefix, [9]
# the models the worker's ComfyUI has loaded (JSON list), [10] AFFINITY_MAX_SKIP, [11] AFFINITY_MAX_WAIT_S,
# [12] now (epoch s), [13] the running set (a job taken is watched for a lost worker from here: the
# reconciler puts it back if its lease lapses before it starts), [14] Celery's list, when the taker holds no
# ticket for this take (a worker going on to its next job), or "", [15] the text every ticket starts with:
# such a take removes one ticket from the list with the job, so the list keeps one ticket per waiting job (a
# message that is not a ticket, of an earlier version, is left where it was); ARGV[16]-[21] are jobs.scripts
# ``CLAIM``'s; [22] the job classes the worker can run (JSON list of "<workflow>@<catalog version>", see
# ``job_class``) or "" for any; [23], [24] JSON lists (affinity, below). For the job taken it returns
# ``taken(id, its record's fields (HGETALL))``, a Lua function the script defines before this (jobs.scripts
# ``CLAIM``: it may also start the job); false when nothing waits; "blocked" when jobs wait but none of a
# class the worker can run (a ticket the taker held is another worker's to use: worker_store.JobStore.take
# hands it on).
#
# Only jobs of the worker's classes are candidates; among them the order is as if the others were not there:
# the highest priority with such jobs, the first tenant in turn order with one (only its turn is used), its
# earliest by sequence. Each (priority, tenant) lane has a lane per class beside it (``clane``, and the set
# of its classes), so a take reads one head per class it can run: never a scan of the jobs.
#
# Model affinity, within that priority: a job costs the worker 0 when its ComfyUI has all the job's models
# loaded, 2 when one must be downloaded first (a URL model, linked under on-demand/, that is not in [23] the
# downloaded models on this worker's disk, or one of [24] the listed models it lacks), else 1 (read from
# disk). The job whose turn it is is taken unless a job among the next AFFINITY_MAX_SKIP candidates (the
# head of each other tenant's lane in turn order, and the next jobs of the tenant whose turn it is) costs
# less: then the first of the cheapest is taken, and each job it overtook counts a skip; a job with
# AFFINITY_MAX_SKIP skips, or waiting AFFINITY_MAX_WAIT_S, is not overtaken any more.
CLAIM = """
local qp = ARGV[1]
local loaded = {}
for _, m in ipairs(cjson.decode(ARGV[9])) do loaded[m] = true end
local max_skip, max_wait, now = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local runs = nil
if ARGV[22] and ARGV[22] ~= '' then
  runs = {}
  for _, c in ipairs(cjson.decode(ARGV[22])) do runs[c] = true end
end
local on_disk, lacking = {}, {}
for _, m in ipairs(cjson.decode(ARGV[23] or '[]')) do on_disk[m] = true end
for _, m in ipairs(cjson.decode(ARGV[24] or '[]')) do lacking[m] = true end
local function cost(id)
  local raw = redis.call('HGET', ARGV[8] .. id, 'models')
  if not raw then return 0 end
  local c = 0
  for _, m in ipairs(cjson.decode(raw)) do
    if not loaded[m] then
      if lacking[m] or (not on_disk[m] and string.sub(m, 1, $DOWNLOADED_LEN) == $DOWNLOADED) then return 2 end
      c = 1
    end
  end
  return c
end
local function must_go(id)
  local skips = tonumber(redis.call('HGET', ARGV[8] .. id, 'skips') or '0') or 0
  local since = tonumber(redis.call('ZSCORE', ARGV[6], id) or now)
  return skips >= max_skip or now - since >= max_wait
end
-- A tenant's first `count` jobs at priority p of classes the worker runs, by sequence: {{id, cls}, ...}.
local function runnable(p, tenant, count)
  local found = {}
  local lane = lane_key(qp, p, tenant)
  for _, cls in ipairs(redis.call('SMEMBERS', classes_key(qp, p, tenant))) do
    if runs == nil or runs[cls] then
      local clane = clane_key(qp, p, tenant, cls)
      for _ = 1, 8 do  -- (re-read after dropping entries a worker of an earlier version took)
        local head = redis.call('ZRANGE', clane, 0, count - 1, 'WITHSCORES')
        local stale = false
        for i = 1, #head, 2 do
          if redis.call('ZSCORE', lane, head[i]) then
            found[#found + 1] = {head[i], cls, tonumber(head[i + 1])}
          else
            leave_class(qp, head[i], tenant, p, cls)
            stale = true
          end
        end
        if not stale then break end
        for i = #found, 1, -1 do if found[i][2] == cls then table.remove(found, i) end end
      end
    end
  end
  if #found <= 1 then return found end
  table.sort(found, function(x, y) return x[3] < y[3] end)
  local out = {}
  for i = 1, math.min(count, #found) do out[i] = found[i] end
  return out
end
local function take(p, tenant, id, cls)
  local turns, lane = turns_key(qp, p), lane_key(qp, p, tenant)
  redis.call('ZREM', lane, id)
  leave_class(qp, id, tenant, p, cls)
  redis.call('LREM', turns, 1, tenant)  -- its turn is used: to the back of the line of tenants
  if redis.call('ZCARD', lane) > 0 then redis.call('RPUSH', turns, tenant) end
  redis.call('HINCRBY', qp .. 'depths', p, -1)
  redis.call('ZREM', ARGV[6], id)
  redis.call('ZREM', ARGV[7], tenant .. '|' .. id)
  redis.call('XADD', ARGV[5], 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', id)
  redis.call('PUBLISH', $CHANGES_OF .. ARGV[5], ARGV[5])
  redis.call('SET', ARGV[4] .. id, ARGV[2], 'PX', ARGV[3])
  redis.call('ZADD', ARGV[13], 'NX', now, id)
  if ARGV[14] ~= '' then
    local ticket = redis.call('RPOP', ARGV[14])
    if ticket and string.sub(ticket, 1, #ARGV[15]) ~= ARGV[15] then redis.call('RPUSH', ARGV[14], ticket) end
  end
  return taken(id, redis.call('HGETALL', ARGV[8] .. id))
end
local waiting = false
for p = $MAX, $MIN, -1 do
  local turns = turns_key(qp, p)
  local tenants = redis.call('LRANGE', turns, 0, -1)
  local at, head = nil, {}
  for i, tenant in ipairs(tenants) do
    head = runnable(p, tenant, 1)
    if #head > 0 then at = i break end
    local lane = lane_key(qp, p, tenant)
    local oldest = redis.call('ZRANGE', lane, 0, 0)
    if #oldest > 0 and redis.call('EXISTS', ARGV[8] .. oldest[1]) == 0 then
      -- Its record expired while it waited (JOB_TTL_S), maybe with its catalog version: out of line.
      local id = oldest[1]
      redis.call('ZREM', lane, id)
      for _, cls in ipairs(redis.call('SMEMBERS', classes_key(qp, p, tenant))) do
        leave_class(qp, id, tenant, p, cls)
      end
      redis.call('HINCRBY', qp .. 'depths', p, -1)
      redis.call('ZREM', ARGV[6], id)
      redis.call('ZREM', ARGV[7], tenant .. '|' .. id)
    end
    if redis.call('ZCARD', lane) == 0 then
      redis.call('LREM', turns, 0, tenant)  -- an empty lane left behind: do not stall on it
    else
      waiting = true  -- jobs of classes this worker does not run
    end
  end
  if at ~= nil then
    local first = tenants[at]
    local due = head[1]
    if max_skip == 0 or must_go(due[1]) then return take(p, first, due[1], due[2]) end
    local due_cost = cost(due[1])
    if due_cost == 0 then return take(p, first, due[1], due[2]) end
    -- Candidates in the order they would be taken: the next jobs of this tenant, the other tenants' heads.
    head = runnable(p, first, max_skip + 1)
    local candidates = {}
    for i = 2, #head do candidates[#candidates + 1] = {first, head[i]} end
    local others = 0
    for i = at + 1, #tenants do
      local other = runnable(p, tenants[i], 1)
      if #other > 0 then
        others = others + 1
        table.insert(candidates, others, {tenants[i], other[1]})
      end
    end
    local passed, best, best_cost = {due[1]}, nil, due_cost
    for i = 1, math.min(#candidates, max_skip) do
      local job = candidates[i][2]
      local c = cost(job[1])
      if c < best_cost then best, best_cost = i, c end
      if c == 0 or must_go(job[1]) then break end  -- (one that may not be overtaken: none after it)
      passed[#passed + 1] = job[1]
    end
    if best == nil then return take(p, first, due[1], due[2]) end
    for i = 1, best do redis.call('HINCRBY', ARGV[8] .. passed[i], 'skips', 1) end
    return take(p, candidates[best][1], candidates[best][2][1], candidates[best][2][2])
  end
end
if not waiting then return false end
return 'blocked'
"""

# Jobs put in line by a version before class lanes (in a tenant's lane, in no class lane) are added to their
# class lane: run once by each worker as it starts, before it takes any (O(waiting jobs), once; API
# processes are upgraded first, so none is put in line the old way after it). ARGV[1] queue prefix, [2] the
# job key prefix. Returns how many were adopted.
ADOPT = (
    QUEUE_FUNCTIONS
    + """
local qp, adopted = ARGV[1], 0
for p = $MIN, $MAX do
  for _, tenant in ipairs(redis.call('LRANGE', turns_key(qp, p), 0, -1)) do
    local entries = redis.call('ZRANGE', lane_key(qp, p, tenant), 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      local id = entries[i]
      if redis.call('EXISTS', ARGV[2] .. id) == 1 then
        local cls = job_class(ARGV[2] .. id)
        local clane = clane_key(qp, p, tenant, cls)
        if not redis.call('ZSCORE', clane, id) then
          redis.call('ZADD', clane, entries[i + 1], id)
          redis.call('SADD', classes_key(qp, p, tenant), cls)
          adopted = adopted + 1
        end
      end
    end
  end
end
return adopted
"""
)

# ARGV[1] queue prefix, [2] task id, [3] its job hash, [4] the waiting set
# Returns {position (1 = next), waiting}, or {false, waiting} for a job not in line.
POSITION = (
    QUEUE_FUNCTIONS
    + """
local qp, id = ARGV[1], ARGV[2]
local tenant = redis.call('HGET', ARGV[3], 'tenant') or 'null'
local p = tonumber(redis.call('HGET', ARGV[3], 'priority') or '5')
local waiting = redis.call('ZCARD', ARGV[4])
local rank = redis.call('ZRANK', lane_key(qp, p, tenant), id)
if not rank then return {false, waiting} end
local ahead = 0
for higher = p + 1, $MAX do ahead = ahead + tonumber(redis.call('HGET', qp .. 'depths', higher) or '0') end
local mine_seen = false
for _, other in ipairs(redis.call('LRANGE', turns_key(qp, p), 0, -1)) do
  if other == tenant then
    mine_seen = true
    ahead = ahead + rank
  else
    local size = redis.call('ZCARD', lane_key(qp, p, other))
    ahead = ahead + math.min(size, rank)
    if not mine_seen and size > rank then ahead = ahead + 1 end
  end
end
return {ahead + 1, waiting}
"""
)


_DOWNLOADED = ON_DEMAND + "/"  # how a URL model's name begins (model_values.linked_name)


def job_class(workflow_id: str, catalog_version: str | None) -> str:
    """A job's class, as the Lua ``job_class`` makes it from its record: what a worker says it can run."""
    return f"{workflow_id}@{catalog_version or ''}"


@dataclass(frozen=True)
class Affinity:
    """What a worker's take prefers: jobs whose models its ComfyUI has ``loaded`` (AFFINITY_MAX_SKIP,
    AFFINITY_MAX_WAIT_S bound how far any job is overtaken; 0 skips: no preference)."""

    loaded: frozenset[str] = frozenset()
    max_skip: int = 0
    max_wait_s: float = 0.0
    on_disk: frozenset[str] = frozenset()  # models downloaded by URL (under on-demand/) on its disk
    lacking: frozenset[str] = frozenset()  # models workflows list that it would download first


def lua(script: str, departures_maxlen: int) -> str:
    """``script`` with its constants filled in."""
    return (
        script.replace("$MAX", str(PRIORITY_MAX))
        .replace("$MIN", str(PRIORITY_MIN))
        .replace("$DEPARTURES_MAXLEN", str(departures_maxlen))
        .replace("$CHANGES_OF", json.dumps(keys.CHANGES_OF))
        .replace("$DOWNLOADED_LEN", str(len(_DOWNLOADED)))
        .replace("$DOWNLOADED", json.dumps(_DOWNLOADED))
    )
