-- The tenant's running actions, counted at every submit: an index of those
-- alone. (SQLite uses a partial index only when the query repeats its WHERE
-- term, so `actions_active_by_tenant`, over Pending and InProgress, was
-- passed over for `status = 'InProgress'` and every action the tenant ever
-- had was read instead.)
CREATE INDEX actions_running_by_tenant ON actions (tenant_id) WHERE status = 'InProgress';
