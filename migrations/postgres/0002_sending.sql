-- Sending pipeline (issue 4). Kept in step with migrations/sqlite/0002_sending.sql.

-- Which hand-off to a dispatcher a message is on; a result names it, so a late
-- result of an earlier hand-off is recognised and ignored.
ALTER TABLE messages ADD COLUMN dispatches INTEGER NOT NULL DEFAULT 0;
-- The number messaged, as it was when the message was created: inbound STOP
-- from that number through that carrier opts the contact out.
ALTER TABLE messages ADD COLUMN phone_number TEXT NOT NULL DEFAULT '';

DROP INDEX messages_due;
-- The scheduler: due messages of one campaign, oldest first.
CREATE INDEX messages_due ON messages (campaign_id, not_before, id) WHERE status = 'queued';
-- Hand-offs whose result is overdue (recovery).
CREATE INDEX messages_in_flight ON messages (updated_at) WHERE status = 'sending';
CREATE INDEX messages_by_carrier_phone ON messages (carrier, phone_number);
CREATE INDEX campaigns_active ON campaigns (id) WHERE status = 'active';

-- Messages handed to the carrier per campaign and local calendar day (daily_limit).
CREATE TABLE campaign_days (
    campaign_id  UUID NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    day          DATE NOT NULL,
    handed       INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, day)
);
