-- Edges (issue 9): unknown send outcomes, early receipts, daily-limit slots
-- given back, carrier opt-outs. Kept in step with migrations/sqlite/0003_edges.sql.

-- Set while a message's send outcome is unknown (the request may have reached
-- a carrier that does not deduplicate, and no answer came back): the message
-- stays `sending`, is never handed out again, and waits for a receipt to
-- reconcile it or for `dispatch.unknown_outcome_secs` to fail it.
ALTER TABLE messages ADD COLUMN outcome_unknown_at TIMESTAMPTZ;
-- The campaign-local day whose daily_limit slot the current hand-off uses, so
-- a postponed or re-queued hand-off gives it back.
ALTER TABLE messages ADD COLUMN handed_day DATE;

DROP INDEX messages_in_flight;
CREATE INDEX messages_in_flight ON messages (updated_at) WHERE status = 'sending' AND outcome_unknown_at IS NULL;
CREATE INDEX messages_outcome_unknown ON messages (outcome_unknown_at) WHERE outcome_unknown_at IS NOT NULL;

-- Verified delivery receipts that arrived before the send result naming their
-- carrier message id (or before the message was found unknown): applied when
-- that result lands (carriers answer a webhook once; dropping one loses it).
CREATE TABLE early_receipts (
    carrier             TEXT NOT NULL,
    carrier_message_id  TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('sent', 'delivered', 'failed')),
    error               TEXT,
    -- Herald's message id when the callback named it (an unknown outcome to reconcile).
    message_id          UUID,
    received_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (carrier, carrier_message_id, status)
);
CREATE INDEX early_receipts_by_age ON early_receipts (received_at);

-- Consent changes reported by a carrier (Twilio 21610: the number replied STOP).
ALTER TABLE consent_events DROP CONSTRAINT consent_events_source_check;
ALTER TABLE consent_events ADD CONSTRAINT consent_events_source_check
    CHECK (source IN ('api', 'keyword', 'import', 'carrier'));
