-- An Ed25519 signature (base64) uploaded with a library file, passed to
-- agents with each PutFile and RunScript of it.
ALTER TABLE library_files ADD COLUMN signature TEXT;
