-- Compliance (issue 11, SPEC §4.1): recipient-local rules, holds with their
-- reason, caps counted from hand-outs, an audit trail. Kept in step with
-- migrations/postgres/0007_compliance.sql.

-- `recipient` (the default): the campaign's window and the recipient's
-- allowed hours; `campaign`: the window only (the original contract).
ALTER TABLE campaigns ADD COLUMN quiet_hours TEXT NOT NULL DEFAULT 'recipient'
    CHECK (quiet_hours IN ('recipient', 'campaign'));

-- The user's own frequency cap (off while `frequency_cap_max` is NULL): at most
-- max messages per contact per `frequency_cap_hours`, across campaigns; over
-- it a message waits (`hold`) or fails with reason frequency_cap (`skip`).
ALTER TABLE users ADD COLUMN frequency_cap_max INTEGER CHECK (frequency_cap_max >= 1);
ALTER TABLE users ADD COLUMN frequency_cap_hours INTEGER CHECK (frequency_cap_hours >= 1);
ALTER TABLE users ADD COLUMN frequency_cap_over TEXT NOT NULL DEFAULT 'hold'
    CHECK (frequency_cap_over IN ('hold', 'skip'));

-- The rule holding a queued message now ('' when none): the counters key on
-- it, so stats and tasks count `held` by reason from a few rows.
ALTER TABLE messages ADD COLUMN hold_rule TEXT NOT NULL DEFAULT '';
-- When it was first handed to a carrier, and under which rule set.
ALTER TABLE messages ADD COLUMN handed_at TEXT;
ALTER TABLE messages ADD COLUMN rule_set TEXT;
-- The recipient's zones it was judged in ('&'-joined IANA names, 'unknown').
ALTER TABLE messages ADD COLUMN zones TEXT;

-- Every hold, for the audit: which rule, in which zones, until when.
CREATE TABLE message_holds (
    id          INTEGER PRIMARY KEY,
    message_id  BLOB NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    rule        TEXT NOT NULL,
    zones       TEXT NOT NULL,
    held_at     TEXT NOT NULL,
    until       TEXT NOT NULL
);
CREATE INDEX message_holds_by_message ON message_holds (message_id);

-- Every hand-out, per user and phone (its latest, for a message handed out
-- again), for the rolling windows of state caps and the frequency cap. Kept
-- past a campaign's deletion (what was sent was sent); pruned after 30 days.
CREATE TABLE recipient_sends (
    message_id    BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL,
    phone_number  TEXT NOT NULL,
    handed_at     TEXT NOT NULL
);
CREATE INDEX recipient_sends_by_phone ON recipient_sends (user_id, phone_number, handed_at);
CREATE INDEX recipient_sends_by_age ON recipient_sends (handed_at);

-- The counters gain the hold: rebuilt (SQLite cannot change a primary key).
DROP TRIGGER messages_counted_on_insert;
DROP TRIGGER messages_counted_on_delete;
DROP TRIGGER messages_counted_on_update;
CREATE TABLE message_counts_rebuilt (
    campaign_id  BLOB NOT NULL,
    task_id      BLOB NOT NULL,
    variant      TEXT NOT NULL,
    status       TEXT NOT NULL,
    hold         TEXT NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, task_id, variant, status, hold)
);
INSERT INTO message_counts_rebuilt (campaign_id, task_id, variant, status, hold, n)
    SELECT campaign_id, task_id, variant, status, '', n FROM message_counts;
DROP TABLE message_counts;
ALTER TABLE message_counts_rebuilt RENAME TO message_counts;

CREATE TRIGGER messages_counted_on_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.task_id, zeroblob(16)), NEW.variant, NEW.status, NEW.hold_rule, 1)
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER messages_counted_on_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    VALUES (OLD.campaign_id, COALESCE(OLD.task_id, zeroblob(16)), OLD.variant, OLD.status, OLD.hold_rule, -1)
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = n - 1;
END;
CREATE TRIGGER messages_counted_on_update AFTER UPDATE OF campaign_id, task_id, variant, status, hold_rule ON messages
WHEN OLD.campaign_id IS NOT NEW.campaign_id OR OLD.task_id IS NOT NEW.task_id
    OR OLD.variant IS NOT NEW.variant OR OLD.status IS NOT NEW.status OR OLD.hold_rule IS NOT NEW.hold_rule BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    VALUES (OLD.campaign_id, COALESCE(OLD.task_id, zeroblob(16)), OLD.variant, OLD.status, OLD.hold_rule, -1)
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = n - 1;
    INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.task_id, zeroblob(16)), NEW.variant, NEW.status, NEW.hold_rule, 1)
    ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = n + 1;
END;

-- The consent export reads changes in time order, optionally by time range.
CREATE INDEX consent_events_by_time ON consent_events (created_at, id);
