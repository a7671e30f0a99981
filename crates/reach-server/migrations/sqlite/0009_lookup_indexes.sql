-- Machines are looked up by name case-insensitively with lower(name), which
-- the NOCASE index cannot serve; active actions are counted per tenant.
DROP INDEX machines_by_name;
CREATE INDEX machines_by_name ON machines (tenant_id, lower(computer_dns_name));
CREATE INDEX actions_active_by_tenant ON actions (tenant_id, status) WHERE status IN ('Pending', 'InProgress');
