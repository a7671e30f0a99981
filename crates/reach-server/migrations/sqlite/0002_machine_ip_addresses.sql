-- The device's own addresses as its agent reports them: JSON array of
-- reach_proto::agent::IpAddress.
ALTER TABLE machines ADD COLUMN ip_addresses TEXT NOT NULL DEFAULT '[]';
