//! The real services some suites need (PostgreSQL, an S3 server, a
//! browser), named by environment variables: a fresh database or bucket
//! prefix per test, or a clear "skipped: set X" line without them. Under
//! CI a missing variable fails instead: CI skips nothing.

/// The variable naming a PostgreSQL server the tests may create databases on.
pub const POSTGRES_VAR: &str = "REACH_TEST_DATABASE_URL";
/// The variable naming an S3 bucket the tests may write under
/// (`s3://bucket`), with AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
/// (and AWS_ALLOW_HTTP for a plain-http endpoint) set for it.
pub const S3_VAR: &str = "REACH_TEST_S3_URL";

/// The value of `var`, or None after printing the skip notice. Under CI
/// (`CI` set), a missing variable fails the test instead: CI skips nothing.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set under CI; .ci/run starts {what} and sets it"
            );
            eprintln!("skipped: set {var} to run this test on {what} (.ci/run does)");
            None
        }
    }
}

/// A fresh, empty PostgreSQL database on the server named by
/// `REACH_TEST_DATABASE_URL`, or None (with a skip notice) when unset.
pub async fn fresh_postgres() -> Option<String> {
    let base = service_url(POSTGRES_VAR, "PostgreSQL")?;
    let name = format!("reach_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connecting to REACH_TEST_DATABASE_URL");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("creating a test database");
    let mut url = url::Url::parse(&base).expect("REACH_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// A fresh, empty prefix in the bucket named by `REACH_TEST_S3_URL`, as an
/// `s3://bucket/prefix` URL, or None (with a skip notice) when unset.
pub fn fresh_s3_prefix() -> Option<String> {
    let bucket = service_url(S3_VAR, "an S3 server")?;
    Some(format!(
        "{}/{}",
        bucket.trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    ))
}
