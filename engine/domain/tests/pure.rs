//! The domain stays pure: its Cargo.toml may not name a crate that does I/O, runs an async
//! runtime, speaks SQL or HTTP, or hosts WASM. Adding one fails here with the name and why.

const FORBIDDEN: &[&str] = &[
    "tokio", "async-std", "smol", "futures", "sqlx", "rusqlite", "postgres", "tokio-postgres",
    "axum", "hyper", "hyper-util", "reqwest", "ureq", "tonic", "wasmtime", "wasmtime-wasi",
    "lapin", "redis", "notify", "tracing-subscriber", "huizhen-core", "huizhen-plugin",
    "huizhen-hl7", "huizhen-amqp", "huizhen",
];

#[test]
fn the_domain_crate_has_no_io_dependency() {
    let manifest = include_str!("../Cargo.toml");
    let mut section = String::new();
    let mut found = Vec::new();
    for (n, line) in manifest.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_owned();
            continue;
        }
        // Build and target-specific dependency tables count too; dev-dependencies do not
        // reach the library.
        let deps = section.ends_with("dependencies]") && !section.contains("dev-dependencies");
        if !deps || t.is_empty() || t.starts_with('#') {
            continue;
        }
        let name = t.split(['=', '.', ' ']).next().unwrap_or("").trim();
        if FORBIDDEN.contains(&name) {
            found.push(format!("Cargo.toml:{}: `{name}` in {section}", n + 1));
        }
    }
    assert!(
        found.is_empty(),
        "huizhen-domain must stay pure (no I/O, runtime, SQL, HTTP or WASM host); move this to \
         the store, the plugin host or an adapter and implement a domain trait there:\n{}",
        found.join("\n")
    );
}
