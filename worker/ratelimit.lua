-- The rate limiter's maths, run atomically inside Redis so every worker shares one state.
--
-- A transcription of chatbatch/rules/ratelimits.py (the specification): keep the two in step.
-- tests/integration/test_ratelimit_agreement.py drives this script and LocalRateLimiter (the
-- Python maths) with the same events at the same instants and checks that they agree.
-- worker/ratelimit.py joins the sections below ("-- @section NAME" starts one) into its two
-- scripts: clock, common, then acquire or rate_limited. Numbers are stored with %.17g (exact
-- doubles).

-- @section clock
-- Redis's own time (workers' clocks differ), in seconds since EPOCH: microseconds fit a double.
local function clock()
  local t = redis.call('TIME')
  return (tonumber(t[1]) - EPOCH) + tonumber(t[2]) / 1000000
end

-- @section common
local function num(v, default) if v then return tonumber(v) end return default end
local function opt(v) if v == '' then return nil end return tonumber(v) end

local function tuning(first)
  local names = {'headroom', 'share', 'decrease', 'increase', 'cooldown', 'pause',
                 'pause_max', 'min_rpm', 'tau', 'poll', 'slot_ttl', 'state_ttl', 'floor',
                 'quota'}
  local t = {}
  for i, name in ipairs(names) do t[name] = tonumber(ARGV[first + i - 1]) end
  return t
end

local FIELDS = {'tat', 'blk', 'lrn', 'bc', 'lc', 'asc', 'stk',
                'sv', 'sat', 'ssn', 'av', 'aat', 'asn', 'rv', 'rat', 'rsn'}

local function load(key)
  local f = redis.call('HMGET', key, unpack(FIELDS))
  return {tat = num(f[1], 0), blk = num(f[2], 0), lrn = num(f[3], nil), bc = num(f[4], 0),
          lc = num(f[5], -1e300), asc = num(f[6], 1), stk = num(f[7], 0),
          sv = num(f[8], 0), sat = num(f[9], 0), ssn = num(f[10], nil),
          av = num(f[11], 0), aat = num(f[12], 0), asn = num(f[13], nil),
          rv = num(f[14], 0), rat = num(f[15], 0), rsn = num(f[16], nil)}
end

local function save(key, s, now, t)
  local args = {}
  for _, name in ipairs(FIELDS) do
    if s[name] ~= nil then
      args[#args + 1] = name
      args[#args + 1] = string.format('%.17g', s[name])
    end
  end
  redis.call('HSET', key, unpack(args))
  if s.lrn == nil then redis.call('HDEL', key, 'lrn') end
  local ttl = math.max(t.state_ttl, s.blk - now + 1)  -- a long Retry-After outlives idleness
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
end

local IDLE_RESTART = 3

local function fold(v, at, since, now, count, t)
  if since ~= nil and now - at > IDLE_RESTART * t.tau then
    v = 0
    since = nil
  end
  local decayed = v * math.exp(-math.max(0, now - at) / t.tau)
  return decayed + count * 60 / t.tau, now, since or now
end

local function read_rpm(v, at, since, now, t)
  if since == nil then return 0 end
  local decayed = v * math.exp(-math.max(0, now - at) / t.tau)
  return decayed / (1 - math.exp(-math.max(1, now - since) / t.tau))
end

local function over_quota(s, now, t)
  local refused = read_rpm(s.rv, s.rat, s.rsn, now, t)
  local admitted = read_rpm(s.av, s.aat, s.asn, now, t)
  return refused > 0 and refused >= t.quota * (refused + admitted)
end

local function cap_of(ceiling, t)
  if ceiling == nil then return nil end
  return ceiling * (1 - t.headroom)
end

local function pace_rpm(s, ceiling, t)
  local cap = cap_of(ceiling, t)
  if s.lrn == nil then return cap end
  if cap == nil then return s.lrn end
  return math.min(s.lrn, cap)
end

local function accepted(s, now, count, ceiling, t)
  if count <= 0 then return end
  s.av, s.aat, s.asn = fold(s.av, s.aat, s.asn, now, count, t)
  s.stk = 0
  s.asc = 1
  if s.lrn == nil then return end
  local per_minute = math.max(s.bc, s.lrn) * t.increase
  local learned = s.lrn + count * per_minute / s.lrn
  local cap = cap_of(ceiling, t)
  if cap ~= nil and learned >= cap then s.lrn = nil else s.lrn = learned end
end

-- @section acquire
-- KEYS: state, slots. ARGV: count, ceiling rpm or '', concurrency (0: none), acceptances to
-- apply first, holder, first lease number, then the tuning. Returns {granted, wait seconds}.
local count, ceiling, concurrency = tonumber(ARGV[1]), opt(ARGV[2]), tonumber(ARGV[3])
local pending, holder, first = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local t = tuning(7)
local now = clock()
local s = load(KEYS[1])
accepted(s, now, pending, ceiling, t)

local function finish(granted, wait)
  save(KEYS[1], s, now, t)
  return {granted, string.format('%.6f', wait)}
end

if now < s.blk then return finish(0, s.blk - now) end
if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local free = concurrency - redis.call('ZCARD', KEYS[2])
  if free <= 0 then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return finish(0, math.max(0.001, math.min(t.poll, tonumber(oldest[2]) - now)))
  end
  count = math.min(count, free)
end

local granted = count
local rpm = pace_rpm(s, ceiling, t)
if rpm ~= nil then
  local interval = 60 / rpm
  local burst = math.max(1, math.floor(rpm * t.headroom / 2))
  local tat = math.max(s.tat, now)
  local slack = burst * interval - (tat - now)
  granted = math.max(0, math.min(count, math.floor(slack / interval + 1e-9)))
  if granted == 0 then return finish(0, interval - slack) end
  s.tat = tat + granted * interval
end
s.sv, s.sat, s.ssn = fold(s.sv, s.sat, s.ssn, now, granted, t)
if concurrency > 0 then
  local members = {}
  for i = 0, granted - 1 do
    members[#members + 1] = now + t.slot_ttl
    members[#members + 1] = holder .. ':' .. (first + i)
  end
  redis.call('ZADD', KEYS[2], unpack(members))
  redis.call('PEXPIRE', KEYS[2], math.ceil(t.slot_ttl * 1000) + 1000)
end
return finish(granted, 0)

-- @section rate_limited
-- KEYS: state. ARGV: Retry-After seconds or '', ceiling rpm or '', acceptances to apply first,
-- then the tuning.
local retry_after, ceiling, pending = opt(ARGV[1]), opt(ARGV[2]), tonumber(ARGV[3])
local t = tuning(4)
local now = clock()
local s = load(KEYS[1])
accepted(s, now, pending, ceiling, t)
s.rv, s.rat, s.rsn = fold(s.rv, s.rat, s.rsn, now, 1, t)
if retry_after == nil and now >= s.blk then
  s.blk = now + math.min(t.pause_max, t.pause * 2 ^ s.stk)
  s.stk = s.stk + 1
elseif retry_after ~= nil then
  s.blk = math.max(s.blk, now + retry_after)
end
local measured = s.ssn ~= nil and now - s.ssn >= t.tau
if now - s.lc >= t.cooldown and s.asc == 1 and measured then
  local current = pace_rpm(s, ceiling, t)
  if current == nil then current = math.max(read_rpm(s.sv, s.sat, s.ssn, now, t), t.min_rpm) end
  local admitted = read_rpm(s.av, s.aat, s.asn, now, t)
  local target = admitted * t.share
  if not (target > 0 and target < current) then target = current * t.decrease end
  if over_quota(s, now, t) then
    s.lrn = math.max(t.min_rpm, target)
    s.bc = admitted
  else
    local peak = math.max(s.bc, current)
    s.lrn = math.max(t.min_rpm, target, peak * t.floor)
    s.bc = peak
  end
  s.lc = now
  s.asc = 0
end
save(KEYS[1], s, now, t)
return 1
