-- The dedup table of rocketmq-dedup's PostgresStore and PostgresInbox (PostgreSQL 12+): the
-- Java library RocketMQDedupListener's t_rocketmq_dedup, plus the owner token.
--
-- One row per record key: application_name (the listener's namespace), topic, tag (empty
-- unless the key is tag-qualified) and msg_uniq_key (the dedup key). A part longer than 128
-- bytes is stored as '#' and 32 hex digits of its hash. The key columns are bytea: any bytes,
-- compared exactly.
--
-- status is 'CONSUMING' (a claim, owned by owner_token) or 'CONSUMED'; expire_time is in
-- milliseconds since the epoch by the database's clock. A row whose expire_time has passed
-- counts as absent, and the store's purge job deletes it.
CREATE TABLE IF NOT EXISTS t_rocketmq_dedup (
    application_name BYTEA       NOT NULL,
    topic            BYTEA       NOT NULL,
    tag              BYTEA       NOT NULL,
    msg_uniq_key     BYTEA       NOT NULL,
    status           VARCHAR(16) NOT NULL,
    owner_token      BIGINT      NULL,
    expire_time      BIGINT      NOT NULL,
    PRIMARY KEY (application_name, topic, tag, msg_uniq_key)
);
CREATE INDEX IF NOT EXISTS t_rocketmq_dedup_expire_time ON t_rocketmq_dedup (expire_time);
