-- Tidings event log, schema version 2: the transactional outbox. Runs with search_path set to
-- the log's own schema; the functions keep that search_path (SET search_path FROM CURRENT), so
-- they work whatever the caller's is.
--
-- An application publishes inside its own transaction by inserting into `outbox`, directly or
-- through `publish(...)`; the row exists if and only if that transaction commits. Hub nodes move
-- committed rows into `events` (deleting them here) under the append lock, in `id` order, and
-- move rows they cannot publish (an invalid field, a duplicate event id) to `outbox_rejected`
-- with the reason. An INSERT notifies the hubs at commit (NOTIFY is transactional); the hubs also
-- look at start-up, after reconnecting, and every few seconds.

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topics text[] NOT NULL,
    type text,
    data text NOT NULL DEFAULT '',
    event_id text,
    retry bigint,
    private boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE outbox_rejected (
    id bigint PRIMARY KEY,
    topics text[],
    type text,
    data text,
    event_id text,
    retry bigint,
    private boolean,
    created_at timestamptz,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL
);

-- The tables `tidings pg watch` has put a trigger on (see watch.rs).
CREATE TABLE watches (
    relid oid PRIMARY KEY,
    table_name text NOT NULL,
    topic text NOT NULL,
    columns text[] NOT NULL,
    when_changed text[] NOT NULL,
    type text,
    private boolean NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify('tidings_outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The hub's rules for an event's fields (see tidings-core's event.rs), checked in the
-- publisher's transaction so that a bad call fails there with a clear message. Rows inserted
-- into `outbox` directly are checked by the hub when it moves them.
CREATE FUNCTION check_event(topics text[], type text, event_id text, retry bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    IF topics IS NULL OR cardinality(topics) = 0 THEN
        RAISE EXCEPTION 'tidings.publish: an event needs at least one topic'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH t IN ARRAY topics LOOP
        IF t IS NULL OR t = '' THEN
            RAISE EXCEPTION 'tidings.publish: topic is empty'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF octet_length(t) > 2048 THEN
            RAISE EXCEPTION 'tidings.publish: topic is longer than 2048 bytes'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF t ~ '[\x01-\x1f\x7f\u0080-\u009f]' THEN
            RAISE EXCEPTION 'tidings.publish: topic contains a control character'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF type IS NOT NULL THEN
        IF type = '' THEN
            RAISE EXCEPTION 'tidings.publish: type is empty'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF octet_length(type) > 256 THEN
            RAISE EXCEPTION 'tidings.publish: type is longer than 256 bytes'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF type ~ '[\r\n]' THEN
            RAISE EXCEPTION 'tidings.publish: type contains CR, LF or NUL'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF event_id IS NOT NULL THEN
        IF event_id = '' THEN
            RAISE EXCEPTION 'tidings.publish: id is empty'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF octet_length(event_id) > 512 THEN
            RAISE EXCEPTION 'tidings.publish: id is longer than 512 bytes'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF event_id ~ '[\x01-\x1f\x7f\u0080-\u009f]' THEN
            RAISE EXCEPTION 'tidings.publish: id contains a control character'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF event_id = 'earliest' THEN
            RAISE EXCEPTION 'tidings.publish: id "earliest" is reserved'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF starts_with(event_id, 'webhook:') THEN
            RAISE EXCEPTION 'tidings.publish: ids starting with "webhook:" are reserved for webhook deliveries'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF retry IS NOT NULL AND retry < 0 THEN
        RAISE EXCEPTION 'tidings.publish: retry must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- publish_to(topics, type, data, private, id, retry): one event on several topics (the first
-- canonical, the rest Mercure's alternate topics). It runs as the schema's owner (SECURITY
-- DEFINER), so `GRANT USAGE ON SCHEMA <schema> TO role` is all a role needs to publish.
CREATE FUNCTION publish_to(
    topics text[],
    type text DEFAULT NULL,
    data text DEFAULT '',
    private boolean DEFAULT false,
    id text DEFAULT NULL,
    retry bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_variable
DECLARE
    row_id bigint;
BEGIN
    PERFORM check_event(topics, type, id, retry);
    INSERT INTO outbox AS o (topics, type, data, event_id, retry, private)
        VALUES (topics, type, coalesce(data, ''), id, retry, coalesce(private, false))
        RETURNING o.id INTO row_id;
    RETURN row_id;
END
$$;

-- publish(topic, type, data, private, id, retry): one event on one topic; returns the outbox
-- row's id. `data` is text; a jsonb overload serializes it.
CREATE FUNCTION publish(
    topic text,
    type text DEFAULT NULL,
    data text DEFAULT '',
    private boolean DEFAULT false,
    id text DEFAULT NULL,
    retry bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT publish_to(ARRAY[topic], type, data, private, id, retry)
$$;

CREATE FUNCTION publish(
    topic text,
    type text,
    data jsonb,
    private boolean DEFAULT false,
    id text DEFAULT NULL,
    retry bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT publish_to(ARRAY[topic], type, data::text, private, id, retry)
$$;
