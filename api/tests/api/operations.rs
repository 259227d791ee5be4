//! Operations endpoints, the two migration trees, and the contract in step with the routes.

use std::collections::BTreeSet;

use crate::helpers::{TestApp, TestDb};

#[test]
fn health_readiness_metrics_spec_and_docs_answer() {
    let app = TestApp::spawn();
    assert_eq!(app.get("/healthz", None).status, 200);
    assert_eq!(app.get("/readyz", None).json["status"], "ready");
    let ada = app.signup();
    app.get("/v1/me", Some(&ada.token));
    let metrics = app.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("# TYPE http_requests_total counter"));
    assert!(
        metrics
            .text
            .contains(r#"http_requests_total{method="GET",route="/v1/me",status="200"} 1"#),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("db_pool_connections"));
    let spec = app.get("/openapi.yaml", None);
    assert!(spec.text.starts_with("openapi: 3.1"));
    let docs = app.get("/docs/", None);
    assert_eq!(docs.status, 200);
    assert!(
        docs.text.contains("swagger"),
        "the reference is served from the binary"
    );
}

fn spec_operations() -> BTreeSet<(String, String)> {
    let spec: serde_yaml::Value =
        serde_yaml::from_str(api::routes::ops::OPENAPI_YAML).expect("openapi.yaml parses");
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().unwrap().to_uppercase();
            if ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                .contains(&method.as_str())
            {
                ops.insert((method, path.as_str().unwrap().to_string()));
            }
        }
    }
    ops
}

#[test]
fn the_spec_describes_exactly_the_routes_the_server_has() {
    let routes: BTreeSet<(String, String)> = api::routes::table()
        .into_iter()
        .map(|e| (e.method.to_string(), e.path.to_string()))
        .collect();
    let spec = spec_operations();
    let missing: Vec<_> = routes.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes not in openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi.yaml operations the server lacks: {extra:?}"
    );
}

#[test]
fn migrations_go_down_and_up_again_to_the_same_schema() {
    let db = TestDb::new();
    let mut conn = db.connect();
    schema::migrate(&mut conn).unwrap();
    let first = schema::describe_tables(&mut conn).unwrap();
    assert!(first.iter().any(|(t, _)| t == "users"));
    schema::revert_all(&mut conn).unwrap();
    assert!(schema::describe_tables(&mut conn).unwrap().is_empty());
    schema::migrate(&mut conn).unwrap();
    assert_eq!(schema::describe_tables(&mut conn).unwrap(), first);
}

/// Both migration trees must give the same tables and columns. Needs PostgreSQL; without
/// `TEST_DATABASE_URL` the comparison is skipped (CI's PostgreSQL run always has it).
#[test]
fn sqlite_and_postgres_migrations_produce_the_same_tables_and_columns() {
    let Ok(pg_admin) = std::env::var("TEST_DATABASE_URL") else {
        // `.ci/run` runs the whole suite again on PostgreSQL, where this comparison runs.
        eprintln!(
            "skipped: TEST_DATABASE_URL is not set, so the PostgreSQL tree cannot be compared"
        );
        return;
    };
    let pg = TestDb::new();
    assert!(
        pg.is_postgres(),
        "TEST_DATABASE_URL={pg_admin} must be a postgres:// URL"
    );
    let dir = std::env::temp_dir().join(format!("mkt-mig-{}", api::domain::ids::random_token(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lite = schema::ConnectionManager::new(&format!("sqlite://{}/m.sqlite3", dir.display()))
        .establish()
        .unwrap();
    let mut pgc = pg.connect();
    schema::migrate(&mut lite).unwrap();
    schema::migrate(&mut pgc).unwrap();
    let (a, b) = (
        schema::describe_tables(&mut lite).unwrap(),
        schema::describe_tables(&mut pgc).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(a, b);
}
