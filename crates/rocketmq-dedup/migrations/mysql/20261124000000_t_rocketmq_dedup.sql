-- The dedup table of rocketmq-dedup's MySqlStore and MySqlInbox (MySQL 5.7+, MariaDB 10.3+):
-- the Java library RocketMQDedupListener's t_rocketmq_dedup, plus the owner token.
--
-- One row per record key: application_name (the listener's namespace), topic, tag (empty
-- unless the key is tag-qualified) and msg_uniq_key (the dedup key). A part longer than 128
-- bytes is stored as '#' and 32 hex digits of its hash, so every part fits. The key columns
-- are binary: compared byte for byte, with no collation to make 'a' equal 'a '.
--
-- status is 'CONSUMING' (a claim, owned by owner_token) or 'CONSUMED'; expire_time is in
-- milliseconds since the epoch by the database's clock. A row whose expire_time has passed
-- counts as absent, and the store's purge job deletes it.
CREATE TABLE IF NOT EXISTS t_rocketmq_dedup (
    application_name VARBINARY(255) NOT NULL,
    topic            VARBINARY(255) NOT NULL,
    tag              VARBINARY(255) NOT NULL,
    msg_uniq_key     VARBINARY(255) NOT NULL,
    status           VARCHAR(16)    NOT NULL,
    owner_token      BIGINT         NULL,
    expire_time      BIGINT         NOT NULL,
    PRIMARY KEY (application_name, topic, tag, msg_uniq_key),
    KEY t_rocketmq_dedup_expire_time (expire_time)
) ENGINE = InnoDB;
