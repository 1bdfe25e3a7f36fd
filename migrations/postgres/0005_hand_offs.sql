-- `dispatch` means the dispatcher only: the per-message hand-off counter is
-- `hand_offs` (which hand-off to a dispatcher a message is on).
ALTER TABLE messages RENAME COLUMN dispatches TO hand_offs;
