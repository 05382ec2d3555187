//! The way over from the Java library RocketMQDedupListener: its MySQL table, created by its
//! README's DDL verbatim and holding rows it wrote, on a real MariaDB.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::sql::mysql::MySqlStore;
use rocketmq_dedup::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};
use rocketmq_dedup::StoreError;
use rocketmq_dedup_testkit::MariaDbServer;
use sqlx::MySqlPool;

/// The Java library's README's table, as it gives it.
const JAVA_DDL: &str = r#"-- ----------------------------
-- Table structure for t_rocketmq_dedup
-- ----------------------------
DROP TABLE IF EXISTS `t_rocketmq_dedup`;
CREATE TABLE `t_rocketmq_dedup` (
`application_name` varchar(255) NOT NULL COMMENT '消费的应用名（可以用消费者组名称）',
`topic` varchar(255) NOT NULL COMMENT '消息来源的topic（不同topic消息不会认为重复）',
`tag` varchar(16) NOT NULL COMMENT '消息的tag（同一个topic不同的tag，就算去重键一样也不会认为重复），没有tag则存""字符串',
`msg_uniq_key` varchar(255) NOT NULL COMMENT '消息的唯一键（建议使用业务主键）',
`status` varchar(16) NOT NULL COMMENT '这条消息的消费状态',
`expire_time` bigint(20) NOT NULL COMMENT '这个去重记录的过期时间（时间戳）',
UNIQUE KEY `uniq_key` (`application_name`,`topic`,`tag`,`msg_uniq_key`) USING BTREE
) ENGINE=InnoDB DEFAULT CHARSET=utf8 ROW_FORMAT=COMPACT;
"#;

const NAMESPACE: &str = "payments";
const TOPIC: &str = "Orders";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Creates the Java table and writes rows as the Java library does (`JDBCPersit`: its six
/// columns, `expire_time` by its own clock).
async fn java_table(pool: &MySqlPool, rows: &[(&str, &str, &str, Duration)]) {
    sqlx::raw_sql(JAVA_DDL).execute(pool).await.unwrap();
    for &(tag, key, status, ttl) in rows {
        java_insert(pool, tag, key, status, ttl).await;
    }
}

/// One row as the Java library inserts it (`JDBCPersit.setConsumingIfNX`, `markConsumed`).
async fn java_insert(pool: &MySqlPool, tag: &str, key: &str, status: &str, ttl: Duration) {
    sqlx::query(
        "INSERT INTO t_rocketmq_dedup(application_name, topic, tag, msg_uniq_key, status, expire_time) values (?, ?, ?, ?, ?, ?)",
    )
    .bind(NAMESPACE)
    .bind(TOPIC)
    .bind(tag)
    .bind(key)
    .bind(status)
    .bind(now_ms() + ttl.as_millis() as i64)
    .execute(pool)
    .await
    .unwrap();
}

/// The Java library's read of a record (`JDBCPersit.get`).
async fn java_status(pool: &MySqlPool, tag: &str, key: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT status FROM t_rocketmq_dedup where application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key  = ? and expire_time > ?",
    )
    .bind(NAMESPACE)
    .bind(TOPIC)
    .bind(tag)
    .bind(key)
    .bind(now_ms())
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn column_types(pool: &MySqlPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT CONVERT(COLUMN_NAME USING utf8mb4), CONVERT(COLUMN_TYPE USING utf8mb4) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't_rocketmq_dedup' ORDER BY ORDINAL_POSITION",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn key(tag: Option<&str>, key: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        namespace: NAMESPACE,
        topic: TOPIC,
        tag,
        key,
        ..KeyParts::default()
    })
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_table_on_mariadb_is_refused_with_the_statement_that_fits_it() {
    let server = MariaDbServer::start_local().unwrap();
    let pool = MySqlPool::connect(server.url()).await.unwrap();
    java_table(
        &pool,
        &[
            ("", "o-consumed", "CONSUMED", HOUR),
            ("", "o-consuming", "CONSUMING", MINUTE),
            ("", "Order-1", "CONSUMED", HOUR),
            ("", "o-expired", "CONSUMED", Duration::ZERO),
        ],
    )
    .await;
    let before = column_types(&pool).await;

    let refused = MySqlStore::builder(server.url()).connect().await;
    let Err(StoreError::TableUnfit {
        table,
        problems,
        statement,
    }) = refused
    else {
        panic!("a Java table must be refused, got {refused:?}");
    };
    assert_eq!(table, "t_rocketmq_dedup");
    for expected in [
        "collation utf8",
        "holds 16 where a part takes up to 128 bytes",
        "no column owner_token",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in {problems:?}"
        );
    }
    assert_eq!(
        column_types(&pool).await,
        before,
        "refusing changes nothing"
    );

    // The operator runs the statement the error names, verbatim.
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&pool)
        .await
        .unwrap();
    let store = MySqlStore::builder(server.url()).connect().await.unwrap();

    // The Java library's rows are honoured: CONSUMED is consumed, CONSUMING is in flight,
    // an expired row is absent.
    let keys = [
        key(None, "o-consumed"),
        key(None, "o-consuming"),
        key(None, "Order-1"),
        key(None, "order-1"),
        key(None, "o-expired"),
    ];
    let token = OwnerToken::random();
    let claimed = store.claim(&keys, token, MINUTE).await.unwrap();
    assert_eq!(
        claimed,
        [
            ClaimOutcome::Consumed,
            ClaimOutcome::InFlight,
            ClaimOutcome::Consumed,
            // Bytes now: another case is another record.
            ClaimOutcome::Claimed,
            ClaimOutcome::Claimed,
        ]
    );

    // A tag longer than the Java column's 16 characters is kept whole.
    let long_tag = "refund-requested-by-customer";
    let tagged = [key(Some(long_tag), "o-7")];
    assert_eq!(
        store.claim(&tagged, token, MINUTE).await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    assert_eq!(
        store.commit(&tagged, token, HOUR).await.unwrap(),
        [CommitOutcome::Committed]
    );

    // The Java library still reads and writes the altered table: it sees the Rust record,
    // and its own insert is honoured by the Rust store.
    assert_eq!(
        java_status(&pool, long_tag, "o-7").await.as_deref(),
        Some("CONSUMED")
    );
    java_insert(&pool, "", "o-java-late", "CONSUMED", HOUR).await;
    assert_eq!(
        store
            .claim(&[key(None, "o-java-late")], token, MINUTE)
            .await
            .unwrap(),
        [ClaimOutcome::Consumed]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_table_on_mariadb_is_fitted_by_migrate_keeping_its_rows() {
    let server = MariaDbServer::start_local().unwrap();
    let pool = MySqlPool::connect(server.url()).await.unwrap();
    java_table(
        &pool,
        &[
            ("", "o-1", "CONSUMED", HOUR),
            ("TagA", "o-2", "CONSUMING", MINUTE),
        ],
    )
    .await;

    // A listener's store from a URL fits the table itself.
    let store = rocketmq_dedup::connect(server.url()).await.unwrap();
    let types = column_types(&pool).await;
    for (column, expected) in [
        ("application_name", "varbinary(255)"),
        ("tag", "varbinary(255)"),
        ("msg_uniq_key", "varbinary(255)"),
        ("owner_token", "bigint(20)"),
    ] {
        assert!(
            types.contains(&(column.to_owned(), expected.to_owned())),
            "{column} {expected} not in {types:?}"
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t_rocketmq_dedup")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    let token = OwnerToken::random();
    assert_eq!(
        store
            .claim(&[key(None, "o-1"), key(Some("TagA"), "o-2")], token, MINUTE)
            .await
            .unwrap(),
        [ClaimOutcome::Consumed, ClaimOutcome::InFlight]
    );
    // Fitted once: a second migrate changes nothing and a plain connect is accepted.
    let again = MySqlStore::builder(server.url()).connect().await.unwrap();
    again.migrate().await.unwrap();
    assert_eq!(column_types(&pool).await, types);
}
