-- A GetFile chunk is announced with the CRC-32 of its bytes (NULL: an agent
-- that sent their SHA-256 instead); the whole file's SHA-256 proves the file.
ALTER TABLE result_chunks ADD COLUMN raw_crc32 BIGINT;
