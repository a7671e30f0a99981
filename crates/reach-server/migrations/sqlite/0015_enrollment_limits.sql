-- Enrollment tokens expire, may be used a limited number of times, and can
-- be revoked (NULL: never expires, no use limit, not revoked). Tokens made
-- before this migration keep working until an operator revokes them.
ALTER TABLE enrollment_tokens ADD COLUMN expires_us INTEGER;
ALTER TABLE enrollment_tokens ADD COLUMN max_uses INTEGER;
ALTER TABLE enrollment_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN revoked_us INTEGER;
