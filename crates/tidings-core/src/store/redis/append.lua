-- Appends a group of requests to the log, atomically (Redis runs a script alone, so the order
-- of commits is the order of seqs, on every node).
--
-- KEYS[1] the seq counter, KEYS[2] the stream, KEYS[3] the id -> seq hash,
-- KEYS[4] the topic -> newest seq sorted set.
-- ARGV[1] the prefix of per-topic sorted sets, ARGV[2] the commit channel, ARGV[3] this node,
-- ARGV[4] the number of requests; then per request its event count n and 6 * n fields:
-- id, topics (joined by "\n"), type ("" = none), data, retry ("" = none), private ("1"/"0").
--
-- Answers {stored_at_ms, r_1, ..., r_k}: r_i is the first seq given to request i (an integer),
-- or the id that made it a duplicate (a string); a duplicate request stores nothing and
-- consumes no seq.
local seq_key, log, ids, topics = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local topic_prefix, channel, node = ARGV[1], ARGV[2], ARGV[3]
local requests = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_text = string.format('%d', now)
local out = {now}
local pos = 5
local upto = nil
for _ = 1, requests do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local dup = nil
  for i = 0, n - 1 do
    local id = ARGV[pos + i * 6]
    if redis.call('HEXISTS', ids, id) == 1 then
      dup = id
      break
    end
  end
  if dup then
    out[#out + 1] = dup
  else
    local last = redis.call('INCRBY', seq_key, n)
    local first = last - n + 1
    for i = 0, n - 1 do
      local b = pos + i * 6
      local seq = string.format('%d', first + i)
      local id, event_topics = ARGV[b], ARGV[b + 1]
      redis.call('XADD', log, seq .. '-0', 'i', id, 't', event_topics, 'k', ARGV[b + 2],
        'd', ARGV[b + 3], 'r', ARGV[b + 4], 'p', ARGV[b + 5], 's', now_text)
      redis.call('HSET', ids, id, seq)
      for topic in string.gmatch(event_topics, '[^\n]+') do
        redis.call('ZADD', topic_prefix .. topic, seq, seq)
        redis.call('ZADD', topics, seq, topic)
      end
    end
    out[#out + 1] = first
    upto = last
  end
  pos = pos + n * 6
end
if upto then
  redis.call('PUBLISH', channel, string.format('%d', upto) .. ' ' .. node)
end
return out
