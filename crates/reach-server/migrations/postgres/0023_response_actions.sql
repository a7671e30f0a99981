-- Response actions (isolate, release, offboard): an action's type, one
-- active action per machine and type (isolate and release count as one
-- type: a release waiting behind an isolate would race it), and the
-- device's isolation as its agent last reported it or the last isolate or
-- release that succeeded.
ALTER TABLE actions ADD COLUMN kind TEXT NOT NULL DEFAULT 'LiveResponse';
DROP INDEX actions_one_active_per_machine;
CREATE UNIQUE INDEX actions_one_active_per_machine
    ON actions (machine_id, (COALESCE(batch_id, '')), (CASE kind WHEN 'Unisolate' THEN 'Isolate' ELSE kind END))
    WHERE status IN ('Pending', 'InProgress');
ALTER TABLE machines ADD COLUMN isolated BIGINT NOT NULL DEFAULT 0;
-- When the machine was offboarded (it is then revoked too): its agent is
-- answered 410 and deletes its credential.
ALTER TABLE machines ADD COLUMN offboarded_us BIGINT;

-- A submission names its type: only live response counts against the
-- tenant's running limit and the requestor's queue (response actions have
-- rate limits of their own), and only live response waits for a machine's
-- batch action.
DROP FUNCTION reach_create_action(TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, TEXT);
CREATE FUNCTION reach_create_action(
    p_id TEXT, p_tenant_id TEXT, p_machine_id TEXT, p_requestor TEXT,
    p_requestor_comment TEXT, p_now BIGINT, p_requestor_id TEXT,
    p_running_limit BIGINT, p_pending_limit BIGINT, p_commands TEXT, p_kind TEXT)
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
        WHERE tenant_id = p_tenant_id AND status = 'InProgress' AND batch_id IS NULL
        AND kind = 'LiveResponse';
    IF p_kind = 'LiveResponse' AND v_running >= p_running_limit THEN
        RETURN QUERY SELECT 'TenantActionLimit'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    SELECT count(*) INTO v_queued FROM actions
        WHERE requestor_id = p_requestor_id AND status = 'Pending' AND batch_id IS NULL
        AND kind = 'LiveResponse';
    IF p_kind = 'LiveResponse' AND v_queued >= p_pending_limit THEN
        RETURN QUERY SELECT 'RequestorQueueLimit'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    IF p_kind = 'LiveResponse' AND EXISTS (SELECT 1 FROM actions WHERE machine_id = p_machine_id
               AND status IN ('Pending', 'InProgress') AND batch_id IS NOT NULL) THEN
        RETURN QUERY SELECT 'ActiveActionExists'::TEXT, NULL::TEXT;
        RETURN;
    END IF;
    INSERT INTO actions (id, tenant_id, machine_id, computer_dns_name, requestor,
        requestor_comment, status, created_us, updated_us, requestor_id, kind)
    SELECT p_id, m.tenant_id, m.id, m.computer_dns_name, p_requestor,
        p_requestor_comment, 'Pending', p_now, p_now, p_requestor_id, p_kind
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
