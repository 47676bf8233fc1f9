-- With encryption on, `dedup_key` holds the key's blind index (an HMAC, `hmac:…`), which the
-- dedup lookup compares, and this column holds the key itself sealed (`hze:…`), bound to its
-- message, for people reading the message. NULL with encryption off.
ALTER TABLE messages ADD COLUMN dedup_key_sealed TEXT;
