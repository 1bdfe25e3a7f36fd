-- Compliance (issue 11, SPEC §4.1): recipient-local rules, holds with their
-- reason, caps counted from hand-outs, an audit trail. Kept in step with
-- migrations/sqlite/0007_compliance.sql, which explains each change.

ALTER TABLE campaigns ADD COLUMN quiet_hours TEXT NOT NULL DEFAULT 'recipient'
    CHECK (quiet_hours IN ('recipient', 'campaign'));

ALTER TABLE users ADD COLUMN frequency_cap_max INTEGER CHECK (frequency_cap_max >= 1);
ALTER TABLE users ADD COLUMN frequency_cap_hours INTEGER CHECK (frequency_cap_hours >= 1);
ALTER TABLE users ADD COLUMN frequency_cap_over TEXT NOT NULL DEFAULT 'hold'
    CHECK (frequency_cap_over IN ('hold', 'skip'));

-- A constant default: no rewrite of the messages table.
ALTER TABLE messages ADD COLUMN hold_rule TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN handed_at TIMESTAMPTZ;
ALTER TABLE messages ADD COLUMN rule_set TEXT;
-- The recipient's zones it was judged in ('&'-joined IANA names, 'unknown').
ALTER TABLE messages ADD COLUMN zones TEXT;

CREATE TABLE message_holds (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    rule        TEXT NOT NULL,
    zones       TEXT NOT NULL,
    held_at     TIMESTAMPTZ NOT NULL,
    until       TIMESTAMPTZ NOT NULL
);
CREATE INDEX message_holds_by_message ON message_holds (message_id);

CREATE TABLE recipient_sends (
    message_id    UUID PRIMARY KEY,
    user_id       UUID NOT NULL,
    phone_number  TEXT NOT NULL,
    handed_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX recipient_sends_by_phone ON recipient_sends (user_id, phone_number, handed_at);
CREATE INDEX recipient_sends_by_age ON recipient_sends (handed_at);

ALTER TABLE message_counts ADD COLUMN hold TEXT NOT NULL DEFAULT '';
ALTER TABLE message_counts DROP CONSTRAINT message_counts_pkey;
ALTER TABLE message_counts ADD PRIMARY KEY (campaign_id, task_id, variant, status, hold);

CREATE OR REPLACE FUNCTION count_inserted_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, hold_rule, COUNT(*) FROM inserted_messages
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION count_deleted_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, hold_rule, -COUNT(*) FROM deleted_messages
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION count_updated_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    SELECT campaign_id, task_id, variant, status, hold, SUM(d) FROM (
        SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, hold_rule AS hold, 1 AS d FROM updated_messages_new
        UNION ALL
        SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, hold_rule AS hold, -1 AS d FROM updated_messages_old
    ) changes
    GROUP BY 1, 2, 3, 4, 5
    HAVING SUM(d) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE INDEX consent_events_by_time ON consent_events (created_at, id);
