-- Scale (issue 10): reads at constant cost, sends and deletes in the
-- background. Kept in step with migrations/sqlite/0006_scale.sql.

-- daily_limit's upper bound is the operator's `campaigns.max_daily_limit`,
-- which the domain checks; the database keeps the lower bound.
ALTER TABLE campaigns DROP CONSTRAINT campaigns_daily_limit_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_daily_limit_check CHECK (daily_limit >= 1);

-- Set when DELETE answers: the campaign is gone for every read at once, and
-- the purge removes its rows in the background, in bounded batches.
ALTER TABLE campaigns ADD COLUMN deleted_at TIMESTAMPTZ;
DROP INDEX campaigns_by_user;
DROP INDEX campaigns_by_user_status;
CREATE INDEX campaigns_by_user ON campaigns (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_by_user_status ON campaigns (user_id, status, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_deleted ON campaigns (deleted_at) WHERE deleted_at IS NOT NULL;

-- A link's place in its campaign, 1, 2, 3… with no gaps (links are only
-- removed with their campaign): page N of the contacts is a range of it, and
-- the campaign's contact count is its maximum.
ALTER TABLE campaign_contacts ADD COLUMN position BIGINT;
UPDATE campaign_contacts l SET position = r.n
    FROM (SELECT seq, row_number() OVER (PARTITION BY campaign_id ORDER BY seq) AS n FROM campaign_contacts) r
    WHERE l.seq = r.seq;
ALTER TABLE campaign_contacts ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX campaign_contacts_by_position ON campaign_contacts (campaign_id, position);
DROP INDEX campaign_contacts_by_campaign;

-- Bulk paths without per-row foreign-key checks. A CSV import of 1,000,000
-- rows spent half its link insert in the two checks of every link (EXPLAIN
-- ANALYZE: 26.7 s of triggers for 25.7 s of insert, 2,000,000 calls), and
-- queueing paid three checks per message. Integrity is kept by the store
-- instead (docs/decisions.md, "At scale"): links and messages are written only
-- by statements that join their parents, under a share lock on the campaign
-- row that a delete must wait for; contacts only after their user was
-- ensured (users are never deleted); and the purge removes children before
-- the campaign. SQLite keeps its foreign keys: there a check is an index
-- probe inside the same engine call, not a trigger.
ALTER TABLE contacts DROP CONSTRAINT contacts_user_id_fkey;
ALTER TABLE campaign_contacts DROP CONSTRAINT campaign_contacts_campaign_id_fkey;
ALTER TABLE campaign_contacts DROP CONSTRAINT campaign_contacts_contact_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_campaign_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_contact_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_task_id_fkey;

-- The number of contacts linked to each campaign, written by the bulk link
-- in its own transaction: the contact count is one key lookup, and the next
-- position to hand out. (MAX(position) reads the index's last entry, but right
-- after a 1,000,000-row import that read waited on heap pages for up to
-- 0.7 s: docs/benchmarks.md, "At scale".)
CREATE TABLE campaign_sizes (
    campaign_id  UUID PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    contacts     BIGINT NOT NULL
);
INSERT INTO campaign_sizes (campaign_id, contacts)
    SELECT campaign_id, COUNT(*) FROM campaign_contacts GROUP BY campaign_id;

-- A send queues in the background: what it needs to go on after a restart,
-- and how far through the campaign's contacts (by position) it has got.
ALTER TABLE send_tasks ADD COLUMN queuing BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE send_tasks ADD COLUMN queued_through BIGINT NOT NULL DEFAULT 0;
ALTER TABLE send_tasks ADD COLUMN carrier TEXT NOT NULL DEFAULT '';
ALTER TABLE send_tasks ADD COLUMN not_before TIMESTAMPTZ;
ALTER TABLE send_tasks ADD COLUMN b_percentage INTEGER;
CREATE INDEX send_tasks_queuing ON send_tasks (created_at) WHERE queuing;

-- Until when the scheduler leaves a campaign alone (its window is closed, or
-- its day's limit is spent): one row per campaign, where re-stamping every
-- queued message would update a million rows under the write lock.
CREATE TABLE campaign_waits (
    campaign_id  UUID PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    until        TIMESTAMPTZ NOT NULL
);

-- Status-keyed indexes that nothing reads any more (stats and tasks read
-- message_counts): every status change had to rewrite their entries, and the
-- planner could pick them for the claim, sorting a million queued rows.
DROP INDEX messages_by_campaign_status;
DROP INDEX messages_by_task;

-- Messages counted by campaign, task, variant and status, kept by the
-- triggers below in the same transaction as every change of a message, so
-- stats, tasks and /metrics read a few rows instead of counting messages.
-- No foreign key: the purge of a deleted campaign removes its rows last.
-- `task_id` is the nil uuid for a message without a task.
CREATE TABLE message_counts (
    campaign_id  UUID NOT NULL,
    task_id      UUID NOT NULL,
    variant      TEXT NOT NULL,
    status       TEXT NOT NULL,
    n            BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, task_id, variant, status)
);

-- Statement-level triggers: one aggregate per statement, not one counter
-- update per row (a claim of 500 messages is one upsert per key). Keys are
-- upserted in key order, so concurrent writers lock counter rows in the same
-- order and cannot deadlock on them.
CREATE FUNCTION count_inserted_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, COUNT(*) FROM inserted_messages
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE FUNCTION count_deleted_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, -COUNT(*) FROM deleted_messages
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE FUNCTION count_updated_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    SELECT campaign_id, task_id, variant, status, SUM(d) FROM (
        SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, 1 AS d FROM updated_messages_new
        UNION ALL
        SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, -1 AS d FROM updated_messages_old
    ) changes
    GROUP BY 1, 2, 3, 4
    HAVING SUM(d) <> 0
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = message_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_counted_on_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted_messages FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_messages();
CREATE TRIGGER messages_counted_on_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS deleted_messages FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_messages();
CREATE TRIGGER messages_counted_on_update AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS updated_messages_old NEW TABLE AS updated_messages_new
    FOR EACH STATEMENT EXECUTE FUNCTION count_updated_messages();

-- The messages there already.
INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    SELECT campaign_id, COALESCE(task_id, '00000000-0000-0000-0000-000000000000'::uuid) AS task_id, variant, status, COUNT(*) FROM messages GROUP BY 1, 2, 3, 4;
