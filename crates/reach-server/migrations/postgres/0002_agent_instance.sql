-- The agent process a command was handed to (its Hello's `instance`): when
-- the same process reconnects without it, it never received the command,
-- which is then handed out again instead of failed.
ALTER TABLE commands ADD COLUMN agent_instance TEXT;
