-- functions.lua - Herald's Redis function library (cluster mode), loaded by
-- every node with FUNCTION LOAD REPLACE at each connect (in Redis Cluster:
-- on every master). redis.c prepends
--   #!lua name=<fn>
--   local P = '<prefix>'        -- key and topic prefix
--   local CLUSTER = true|false  -- Redis Cluster: tagged names, SPUBLISH
--   local NS = {}; NS['<namespace>'] = {history_size, history_ttl} ...
-- and appends the redis.register_function calls (<fn>_publish, _history,
-- _touch, _init, _presence, _presence_set). Compiled into the binary
-- (cmake/embed.cmake).
--
-- What a backend calls: FCALL <fn>_publish 0 CHANNEL DATA (Redis Cluster:
-- FCALL <fn>_publish 2 <P>:history-meta:{CHANNEL} <P>:history:{CHANNEL}
-- CHANNEL DATA: the keys it touches, declared, so the call goes to the
-- channel's slot and, while the slot migrates, to whichever node holds
-- them; publish refuses other keys in Redis Cluster).
-- Nodes call it too, for history channels, with a third argument FROM
-- (the publishing client, {"user","client","info"}). DATA must be JSON
-- every node can parse and deliver (check_json below): what it is not is
-- refused with an error reply the caller sees, never published.
--
-- Names of channel C: <P>:<kind>:C, or <P>:<kind>:{C} in Redis Cluster
-- (every key and topic of a channel in one slot).
--
-- History of channel C: <P>:history:C, a stream of entries "<offset>-1"
-- with fields d (data) and f (from, client publications only);
-- <P>:history-meta:C, a hash: e (epoch), s (last offset), r (the run id of
-- the Redis process that last wrote it). The meta is created by the first
-- publication, or by a node's read when it subscribes (<fn>_history with
-- CREATE 1), so subscribers from before the first publication are told
-- the epoch that publication will have; a plain read of a channel without
-- a meta creates nothing and says epoch "0", offset 0. The meta expires
-- history_ttl (at least 60 s) after the last publication, and 60 s after
-- its creation by a read (without history_ttl: kept from the first
-- publication on); nodes with subscribers keep it alive (<fn>_touch). A
-- meta created again gets a new epoch: TIME in microseconds and the run
-- id, never given before.
--
-- The epoch fence (SPEC section 5): Redis replication is asynchronous and
-- persistence lags (appendfsync everysec, RDB snapshots), so a Redis that
-- restarted, a promoted replica or a node that received a migrated slot
-- may hold a stream that lost entries its predecessor acknowledged; the
-- next publication would then reuse their offsets in the same epoch, and a
-- client holding one of them would be told it recovered what it never
-- saw. Every call that touches a stream therefore compares the meta's r
-- with this process' run id first: when another process wrote it last,
-- the stream gets a new epoch (offsets go on from s), in the same atomic
-- call, and clients resuming from a position of before see
-- recovered: false. The cost: one reload per subscriber of a history
-- channel after a restart, a failover or a slot migration, even a
-- lossless one (nothing here can prove that none was lost).
-- JSON that jansson accepts (what every node parses): RFC 8259, UTF-8,
-- integers within 64 bits, finite reals, no duplicate keys, no NUL in keys,
-- at most `maxdepth` levels. Returns nil, or why not.
local function utf8_ok(s)
  local i, n = 1, #s
  while true do
    i = string.find(s, '[\128-\255]', i)
    if not i then return true end
    local c = string.byte(s, i)
    local len, min
    if c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
    elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
    else return false end
    if i + len - 1 > n then return false end
    local cp = c % (2 ^ (7 - len))
    for k = 1, len - 1 do
      local b = string.byte(s, i + k)
      if b < 0x80 or b > 0xBF then return false end
      cp = cp * 64 + (b - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
    i = i + len
  end
end
local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                     0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end
local ESC = {['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'}
-- The string starting at s[i] == '"': returns the index after it and, when
-- want is set, its decoded bytes; or nil and why.
local function jstring(s, i, want, key)
  local out, has_nul = want and {} or nil, false
  local j = i + 1
  while true do
    local k = string.find(s, '[%z\1-\31"\\]', j)
    if not k then return nil, 'unterminated string' end
    local seg = string.sub(s, j, k - 1)
    if not utf8_ok(seg) then return nil, 'invalid UTF-8' end
    if out then out[#out + 1] = seg end
    local c = string.sub(s, k, k)
    if c == '"' then
      if key and has_nul then return nil, 'a NUL character in an object key' end
      return k + 1, out and table.concat(out)
    elseif c ~= '\\' then
      return nil, 'a raw control character in a string'
    end
    local e = string.sub(s, k + 1, k + 1)
    if ESC[e] then
      if out then out[#out + 1] = ESC[e] end
      j = k + 2
    elseif e == 'u' then
      local h = string.match(s, '^%x%x%x%x', k + 2)
      if not h then return nil, 'a bad \\u escape' end
      local cp = tonumber(h, 16)
      j = k + 6
      if cp >= 0xDC00 and cp <= 0xDFFF then return nil, 'a lone surrogate \\u' .. h end
      if cp >= 0xD800 and cp <= 0xDBFF then
        local h2 = string.match(s, '^\\u(%x%x%x%x)', j)
        local lo = h2 and tonumber(h2, 16)
        if not lo or lo < 0xDC00 or lo > 0xDFFF then return nil, 'a lone surrogate \\u' .. h end
        cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
        j = j + 6
      end
      if cp == 0 then has_nul = true end
      if out then out[#out + 1] = utf8_char(cp) end
    else
      return nil, 'a bad escape'
    end
  end
end
local INT_MAX = {['+'] = '9223372036854775807', ['-'] = '9223372036854775808'}
local function jnumber(s, i)
  local a, b, sign, int = string.find(s, '^(%-?)(%d+)', i)
  if not a then return nil, 'a bad value' end
  if #int > 1 and string.sub(int, 1, 1) == '0' then return nil, 'a number with a leading zero' end
  local j = b + 1
  local fa, fb = string.find(s, '^%.%d+', j)
  if fa then j = fb + 1 elseif string.sub(s, j, j) == '.' then return nil, 'a bad number' end
  local ea, eb = string.find(s, '^[eE][%+%-]?%d+', j)
  if ea then j = eb + 1 elseif string.find(s, '^[eE]', j) then return nil, 'a bad number' end
  if fa or ea then
    local v = tonumber(string.sub(s, i, j - 1))
    if not v or v == math.huge or v == -math.huge then return nil, 'a number too large for a double' end
  else
    local lim = INT_MAX[sign == '-' and '-' or '+']
    if #int > #lim or (#int == #lim and int > lim) then return nil, 'an integer beyond 64 bits' end
  end
  return j
end
local function check_json(s, maxdepth)
  if type(s) ~= 'string' then return 'not a string' end
  local n, i = #s, 1
  local stack, depth = {}, 0
  local state = 'value' -- value | value_or_end | key | key_or_end | colon | comma_or_end | done
  while true do
    i = string.find(s, '[^ \t\n\r]', i)
    if not i then
      if state == 'done' then return nil end
      return 'truncated JSON'
    end
    local c = string.sub(s, i, i)
    if state == 'done' then
      return 'text after the JSON value'
    elseif state == 'value' or state == 'value_or_end' then
      if c == ']' and state == 'value_or_end' then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
        state = depth == 0 and 'done' or 'comma_or_end'
      elseif c == '{' or c == '[' then
        depth = depth + 1
        if depth > maxdepth then return 'nested deeper than ' .. maxdepth .. ' levels' end
        stack[depth] = c == '{' and {} or false
        i = i + 1
        state = c == '{' and 'key_or_end' or 'value_or_end'
      else
        local j, why
        if c == '"' then
          j, why = jstring(s, i, false, false)
        elseif c == 't' or c == 'f' or c == 'n' then
          local w = string.match(s, '^%a+', i)
          if w ~= 'true' and w ~= 'false' and w ~= 'null' then return 'a bad value' end
          j = i + #w
        else
          j, why = jnumber(s, i)
        end
        if not j then return why end
        i = j
        state = depth == 0 and 'done' or 'comma_or_end'
      end
    elseif state == 'key' or state == 'key_or_end' then
      if c == '}' and state == 'key_or_end' then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
        state = depth == 0 and 'done' or 'comma_or_end'
      elseif c == '"' then
        local j, k = jstring(s, i, true, true)
        if not j then return k end
        if stack[depth][k] then return 'a duplicate object key' end
        stack[depth][k] = true
        i = j
        state = 'colon'
      else
        return 'an object key that is not a string'
      end
    elseif state == 'colon' then
      if c ~= ':' then return 'a missing colon' end
      i = i + 1
      state = 'value'
    else -- comma_or_end
      local obj = stack[depth]
      if c == ',' then
        i = i + 1
        state = obj and 'key' or 'value'
      elseif (c == '}' and obj) or (c == ']' and obj == false) then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
        state = depth == 0 and 'done' or 'comma_or_end'
      else
        return 'a missing comma'
      end
    end
  end
end

local MAX_DEPTH = 64

local function valid(ch)
  return type(ch) == 'string' and #ch >= 1 and #ch <= 255 and
         string.find(ch, '^[%w_%.:@=,%-]+$') ~= nil
end
local function ns_of(ch)
  local i = string.find(ch, ':', 1, true)
  if i then local n = NS[string.sub(ch, 1, i - 1)]; if n then return n end end
  return NS['']
end
local function tag(ch) if CLUSTER then return '{' .. ch .. '}' end return ch end
local function hkeys(ch) return P .. ':history-meta:' .. tag(ch), P .. ':history:' .. tag(ch) end
local function topic(ch) return P .. ':ch:' .. tag(ch) end
local PUBLISH = CLUSTER and 'SPUBLISH' or 'PUBLISH'
local function meta_ttl(ttl) if ttl > 0 then return math.max(ttl, 60) end return 0 end
-- How long a meta created by a read lives without a publication (nodes
-- with subscribers renew it).
local UNBORN_TTL = 60

-- This process' run id (INFO server), read once per Lua VM: a restarted
-- Redis has a new VM and a new run id; a promoted replica was always
-- another process.
local RUN_ID
local function run_id()
  if not RUN_ID then
    RUN_ID = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'
  end
  return RUN_ID
end
local function new_epoch()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2])) .. '-' .. string.sub(run_id(), 1, 8)
end
-- A new meta: a new epoch at offset 0 (a stream left without its meta is
-- not this one).
local function create(mk, sk)
  local e = new_epoch()
  redis.call('HSET', mk, 'e', e, 's', 0, 'r', run_id(), 'b', 0)
  redis.call('DEL', sk)
  return e
end
-- The meta's epoch, last offset and the epoch's base (the last offset
-- before the epoch began: every entry after it was written in this epoch)
-- after the fence (see the top), or nil when there is no meta.
-- The previous epoch p is kept too: its entries up to b are this epoch's.
local function meta(mk)
  local m = redis.call('HMGET', mk, 'e', 's', 'r', 'b', 'p')
  if not m[1] then return nil end
  if m[3] ~= run_id() then
    m[5] = m[1]
    m[1] = new_epoch()
    m[4] = m[2]
    redis.call('HSET', mk, 'e', m[1], 'r', run_id(), 'b', m[2], 'p', m[5])
  end
  return m[1], m[2], m[4] or '0', m[5]
end
local function init()
  run_id()
  return 1
end

local function publish(keys, args)
  local ch, data, from = args[1], args[2], args[3]
  if not valid(ch) then return redis.error_reply('ERR invalid channel name') end
  local why = check_json(data, MAX_DEPTH)
  if why then return redis.error_reply('ERR data must be JSON text Herald can deliver: ' .. why) end
  if from and (string.sub(from, 1, 1) ~= '{' or check_json(from, MAX_DEPTH + 2)) then
    return redis.error_reply('ERR from must be a JSON object')
  end
  if CLUSTER then
    local mk, sk = hkeys(ch)
    if #keys ~= 2 or keys[1] ~= mk or keys[2] ~= sk then
      return redis.error_reply('ERR in Redis Cluster declare the keys: FCALL <fn>_publish 2 ' ..
                               mk .. ' ' .. sk .. ' CHANNEL DATA')
    end
  end
  local ns = ns_of(ch)
  local tail = ''
  local off = 0
  if ns[1] > 0 then
    local mk, sk = hkeys(ch)
    if not meta(mk) then create(mk, sk) end
    off = string.format('%d', redis.call('HINCRBY', mk, 's', 1))
    if from then
      redis.call('XADD', sk, 'MAXLEN', ns[1], off .. '-1', 'd', data, 'f', from)
    else
      redis.call('XADD', sk, 'MAXLEN', ns[1], off .. '-1', 'd', data)
    end
    if ns[2] > 0 then
      redis.call('EXPIRE', sk, ns[2])
      redis.call('EXPIRE', mk, meta_ttl(ns[2]))
    else
      redis.call('PERSIST', mk) -- created by a read, with UNBORN_TTL
    end
    tail = ',"offset":' .. off
  end
  if from then tail = tail .. ',"from":' .. from end
  redis.call(PUBLISH, topic(ch),
             '{"push":"message","channel":"' .. ch .. '","data":' .. data .. tail .. '}')
  return tonumber(off)
end

-- FCALL <fn>_history 0 CHANNEL SINCE LIMIT [CREATE [EPOCH]] -> {epoch, top,
-- offset, data, from, ...}: after SINCE (-1: the newest LIMIT), at most
-- LIMIT (-1: all); from is '' for backend publications. CREATE 1 (a node
-- subscribing) creates the meta of a channel without one (see the top).
-- EPOCH (a node renewing its subscription after an outage): the epoch
-- SINCE belongs to; the reply then ends with AFTER, the offset its entries
-- follow, and KEPT: '1' when AFTER is SINCE and the caller's position is
-- in this stream (its epoch, or the previous one as below), '0' when not. When the stream is in another epoch now: if EPOCH is the
-- previous one and SINCE is not beyond the point where it ended (the base
-- b), the entries up to b are the ones the caller saw, and AFTER = SINCE
-- (nothing lost); otherwise SINCE means nothing here, and the entries are
-- every entry of the current epoch (AFTER = b; all of them or none when
-- more than LIMIT): a subscriber that lost the old epoch's tail still gets
-- everything published since the switch. Offsets stay strings: Lua
-- numbers are doubles, and "1e+14" is no stream id.
local function history(keys, args)
  local ch, since, limit = args[1], args[2], tonumber(args[3])
  if not valid(ch) or type(since) ~= 'string' or not string.find(since, '^%-?%d+$') or
     not limit then
    return redis.error_reply('ERR usage: CHANNEL SINCE LIMIT [CREATE]')
  end
  local mk, sk = hkeys(ch)
  local e, s, base, prev = meta(mk)
  if not e then
    if args[4] ~= '1' or ns_of(ch)[1] <= 0 then return {'0', '0'} end
    e, s = create(mk, sk), '0'
    redis.call('EXPIRE', mk, UNBORN_TTL)
    if args[5] then return {e, s, '0', '0'} end
    return {e, s}
  end
  local out = {e, s}
  local entries = {}
  local kept = '1'
  if args[5] and args[5] ~= e and string.sub(since, 1, 1) ~= '-' and
     not (args[5] == prev and tonumber(since) <= tonumber(base)) then
    since, kept = base, '0'
    if limit >= 0 and tonumber(s) - tonumber(base) > limit then limit = 0 end
  end
  if limit ~= 0 then
    if string.sub(since, 1, 1) ~= '-' then
      local start = '(' .. since .. '-1'
      if limit > 0 then entries = redis.call('XRANGE', sk, start, '+', 'COUNT', limit)
      else entries = redis.call('XRANGE', sk, start, '+') end
    elseif limit > 0 then
      local rev = redis.call('XREVRANGE', sk, '+', '-', 'COUNT', limit)
      for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end
    else entries = redis.call('XRANGE', sk, '-', '+') end
  end
  for _, en in ipairs(entries) do
    local f = en[2]
    out[#out + 1] = string.match(en[1], '^(%d+)-')
    out[#out + 1] = f[2]
    out[#out + 1] = f[4] or ''
  end
  if args[5] then out[#out + 1] = since; out[#out + 1] = kept end
  return out
end

-- Nodes keep the meta of channels they have subscribers of alive (EXPIRE
-- GT never shortens, never gives a kept meta a TTL, and never creates a
-- key): a live subscriber must not see its stream born again under it.
-- In Redis Cluster a call names one channel (the declared key's).
local function touch(keys, args)
  for i = 1, #args do
    local ch = args[i]
    if valid(ch) then
      local ttl = ns_of(ch)[2]
      local t = ttl > 0 and meta_ttl(ttl) or UNBORN_TTL
      redis.call('EXPIRE', (hkeys(ch)), t, 'GT')
    end
  end
  return 1
end

local function pkeys(ch) return P .. ':presence:' .. tag(ch), P .. ':presence-exp:' .. tag(ch) end
local function presence(keys, args)
  local ch = args[1]
  if not valid(ch) then return redis.error_reply('ERR invalid channel name') end
  local hk, zk = pkeys(ch)
  local now = tonumber(redis.call('TIME')[1])
  local dead = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  for i = 1, #dead, 500 do
    redis.call('HDEL', hk, unpack(dead, i, math.min(i + 499, #dead)))
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', zk, '-inf', now) end
  return redis.call('HVALS', hk)
end
local function presence_set(keys, args)
  local ch, ttl = args[1], tonumber(args[2])
  if not valid(ch) or not ttl then return redis.error_reply('ERR usage') end
  local hk, zk = pkeys(ch)
  local until_ = tonumber(redis.call('TIME')[1]) + ttl
  for i = 3, #args - 1, 2 do
    redis.call('HSET', hk, args[i], args[i + 1])
    redis.call('ZADD', zk, until_, args[i])
  end
  redis.call('EXPIRE', hk, ttl * 2)
  redis.call('EXPIRE', zk, ttl * 2)
  return 1
end
