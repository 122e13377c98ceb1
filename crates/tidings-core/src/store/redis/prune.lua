-- Deletes up to ARGV[4] of the oldest events that retention no longer keeps, with their index
-- entries, atomically; answers how many went. The caller repeats it until fewer go.
--
-- KEYS[1] the stream, KEYS[2] the id -> seq hash, KEYS[3] the topic -> newest seq sorted set.
-- ARGV[1] the prefix of per-topic sorted sets; ARGV[2] how many events to keep (-1: no count
-- limit); ARGV[3] the longest age in ms (-1: no age limit), measured on the Redis clock like
-- the events' stored_at; ARGV[4] the most events to delete in this call.
--
-- Age retention deletes the prefix of events older than the cutoff (stored_at follows seq, up
-- to steps of the Redis clock), as the other stores do.
local log, ids, topics = KEYS[1], KEYS[2], KEYS[3]
local topic_prefix = ARGV[1]
local keep, max_age, chunk = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local excess = 0
if keep >= 0 then
  excess = redis.call('XLEN', log) - keep
end
local cutoff = nil
if max_age >= 0 then
  local time = redis.call('TIME')
  cutoff = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - max_age
end
if excess <= 0 and cutoff == nil then
  return 0
end
local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', chunk)
local deleted = 0
local last_id = nil
for _, entry in ipairs(entries) do
  local flat = entry[2]
  local fields = {}
  for j = 1, #flat, 2 do
    fields[flat[j]] = flat[j + 1]
  end
  local old = cutoff ~= nil and (tonumber(fields['s']) or 0) < cutoff
  if deleted >= excess and not old then
    break
  end
  local seq = string.match(entry[1], '^(%d+)')
  if fields['i'] then
    redis.call('HDEL', ids, fields['i'])
  end
  for topic in string.gmatch(fields['t'] or '', '[^\n]+') do
    local key = topic_prefix .. topic
    redis.call('ZREM', key, seq)
    if redis.call('ZCARD', key) == 0 then
      redis.call('ZREM', topics, topic)
    end
  end
  deleted = deleted + 1
  last_id = entry[1]
end
if last_id then
  -- Every entry up to last_id was just deleted from the indexes: drop them from the stream.
  redis.call('XTRIM', log, 'MINID', string.format('%d', tonumber(string.match(last_id, '^(%d+)')) + 1))
end
return deleted
