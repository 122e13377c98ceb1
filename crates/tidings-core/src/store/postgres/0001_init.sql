-- Tidings event log, schema version 1. Runs with search_path set to the log's own schema.

-- One row per event. `data` is bytea because event data may contain NUL, which `text` refuses.
-- `topics` holds every topic in order (duplicates included) joined by LF (topics never contain
-- control characters).
CREATE TABLE events (
    seq bigint PRIMARY KEY,
    id text NOT NULL UNIQUE,
    topics text NOT NULL,
    type text,
    data bytea NOT NULL,
    retry bigint,
    private boolean NOT NULL,
    stored_at bigint NOT NULL
);

-- Each distinct topic of each event, for reads and `latest` narrowed by topic.
CREATE TABLE event_topics (
    seq bigint NOT NULL,
    topic text NOT NULL,
    PRIMARY KEY (seq, topic)
);
CREATE INDEX event_topics_by_topic ON event_topics (topic, seq);

-- The seq counter: the last seq ever given out. Appends advance it under the append lock;
-- pruning never lowers it, so a seq is never reused even when the log is pruned empty.
CREATE TABLE log_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq bigint NOT NULL
);
INSERT INTO log_state (last_seq) VALUES (0);
