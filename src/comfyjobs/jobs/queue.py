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
from typing import Annotated

from pydantic import Field

from comfyjobs import keys

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
local function enter_queue(qp, id, tenant, p, seq)
  local lane = lane_key(qp, p, tenant)
  redis.call('ZADD', lane, seq, id)
  if redis.call('ZCARD', lane) == 1 then redis.call('RPUSH', turns_key(qp, p), tenant) end
  redis.call('HINCRBY', qp .. 'depths', p, 1)
end
local function leave_queue(qp, id, tenant, p)
  local lane = lane_key(qp, p, tenant)
  if redis.call('ZREM', lane, id) == 1 then
    redis.call('HINCRBY', qp .. 'depths', p, -1)
    if redis.call('ZCARD', lane) == 0 then redis.call('LREM', turns_key(qp, p), 0, tenant) end
  end
end
"""

# KEYS: none computed by the caller beyond the prefix (one Redis, not a cluster).
# ARGV[1] queue prefix, [2] worker id (the lease's owner), [3] lease ttl in ms, [4] the lease key prefix,
# [5] the departures stream, [6] the waiting set, [7] the waiting-by-tenant set
# Returns the task id taken, or false when nothing waits.
CLAIM = (
    QUEUE_FUNCTIONS
    + """
local qp = ARGV[1]
for p = $MAX, $MIN, -1 do
  local turns = turns_key(qp, p)
  local tenant = redis.call('LMOVE', turns, turns, 'LEFT', 'RIGHT')
  if tenant then
    local lane = lane_key(qp, p, tenant)
    local popped = redis.call('ZPOPMIN', lane)
    if #popped == 0 then
      redis.call('LREM', turns, 0, tenant)  -- an empty lane left behind: never, but do not stall on it
    else
      local id = popped[1]
      if redis.call('ZCARD', lane) == 0 then redis.call('LREM', turns, 0, tenant) end
      redis.call('HINCRBY', qp .. 'depths', p, -1)
      redis.call('ZREM', ARGV[6], id)
      redis.call('ZREM', ARGV[7], tenant .. '|' .. id)
      redis.call('XADD', ARGV[5], 'MAXLEN', '~', $DEPARTURES_MAXLEN, '*', 'task_id', id)
      redis.call('PUBLISH', $CHANGES, ARGV[5])
      redis.call('SET', ARGV[4] .. id, ARGV[2], 'PX', ARGV[3])
      return id
    end
  end
end
return false
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


def lua(script: str, departures_maxlen: int) -> str:
    """``script`` with its constants filled in."""
    return (
        script.replace("$MAX", str(PRIORITY_MAX))
        .replace("$MIN", str(PRIORITY_MIN))
        .replace("$DEPARTURES_MAXLEN", str(departures_maxlen))
        .replace("$CHANGES", json.dumps(keys.CHANGES))
    )
