-- Actions of one machine: checking a result's machine, a machine's running
-- commands, and the console's "recent actions" without scanning every action.
CREATE INDEX actions_by_machine ON actions (machine_id, created_us DESC);
