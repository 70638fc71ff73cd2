-- What keys each running gateway process holds (gateway/key_holders.py), reported every key_watch.CHECK_INTERVAL:
-- a step of a key rotation goes ahead only once every process that reported lately holds what the step needs
-- (encryption_keys.py, key_rotation.py). One row per process; a process that stops deletes its own, a dead one's ages.
-- Same meaning as sqlite/0010.
CREATE TABLE key_holders (
    process          text PRIMARY KEY,      -- host:pid:nonce (a pid reused after a restart is another process)
    encryption_keys  text NOT NULL,         -- the encryption key ids it holds, the one it seals with first
    registry_kid     text NOT NULL,         -- the kid it signs registry tokens with; '' without a key
    seen_at          timestamptz NOT NULL   -- its last report
);
