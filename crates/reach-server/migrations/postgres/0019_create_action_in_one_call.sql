-- A submission in one round trip on PostgreSQL. The tenant's row lock, the
-- two limit checks and the inserts of the action and its commands used to
-- be five statements from the node, and the lock was held over four round
-- trips: a tenant's submissions ran one at a time across the cluster at the
-- pace of those round trips. Here the lock is held for the function's own
-- work only. Each statement of a (VOLATILE) function sees what committed
-- before it started, so the counts taken after the lock wait see the
-- submission that held it. The node passes the limits and the commands
-- (a JSON array of {idx, command, work, payload_sha256, timeout_secs}) and
-- reads back one row: `outcome` is 'Created' (with the machine's name),
-- 'TenantActionLimit', 'RequestorQueueLimit' or 'MachineNotFound'; a
-- second active action on the machine raises the unique violation of
-- `actions_one_active_per_machine`, as the plain INSERT did. SQLite runs
-- the same steps as statements in the store's own write transaction.
CREATE FUNCTION reach_create_action(
    p_id TEXT, p_tenant_id TEXT, p_machine_id TEXT, p_requestor TEXT,
    p_requestor_comment TEXT, p_now BIGINT, p_requestor_id TEXT,
    p_running_limit BIGINT, p_pending_limit BIGINT, p_commands TEXT)
RETURNS TABLE (outcome TEXT, dns_name TEXT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_running BIGINT;
    v_queued BIGINT;
    v_dns TEXT;
BEGIN
    -- One creator at a time per tenant: the counts stay true until commit.
    PERFORM 1 FROM tenants WHERE id = p_tenant_id FOR UPDATE;
    SELECT count(*) INTO v_running FROM actions
        WHERE tenant_id = p_tenant_id AND status = 'InProgress';
    IF v_running >= p_running_limit THEN
        RETURN QUERY SELECT 'TenantActionLimit'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    SELECT count(*) INTO v_queued FROM actions
        WHERE requestor_id = p_requestor_id AND status = 'Pending';
    IF v_queued >= p_pending_limit THEN
        RETURN QUERY SELECT 'RequestorQueueLimit'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    INSERT INTO actions (id, tenant_id, machine_id, computer_dns_name, requestor,
        requestor_comment, status, created_us, updated_us, requestor_id)
    SELECT p_id, m.tenant_id, m.id, m.computer_dns_name, p_requestor,
        p_requestor_comment, 'Pending', p_now, p_now, p_requestor_id
    FROM machines m WHERE m.id = p_machine_id AND m.tenant_id = p_tenant_id
    RETURNING computer_dns_name INTO v_dns;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'MachineNotFound'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    INSERT INTO commands (action_id, idx, command, work, payload_sha256, status, timeout_secs)
    SELECT p_id, c.idx, c.command, c.work, c.payload_sha256, 'Created', c.timeout_secs
    FROM json_to_recordset(p_commands::json)
        AS c(idx BIGINT, command TEXT, work TEXT, payload_sha256 TEXT, timeout_secs BIGINT);
    RETURN QUERY SELECT 'Created'::TEXT, v_dns;
END;
$$;
