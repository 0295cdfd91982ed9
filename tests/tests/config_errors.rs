//! Invalid configs as fixture pairs (`tests/fixtures/bad-*.toml` beside the exact error
//! `airlock check` must print, `bad-*.err`), so error messages are reviewed as text.
//! Set `AIRLOCK_BLESS=1` to rewrite the `.err` files after an intended change, then review the diff.

use std::process::Command;

use airlock_tests::{airlock_binary, fixture};

#[test]
fn every_bad_fixture_prints_its_expected_error() {
    let dir = fixture("");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("bad-") && name.ends_with(".toml")) {
            continue;
        }
        let output = Command::new(airlock_binary())
            .args(["check", "-c", &name])
            .current_dir(&dir)
            .env("RUST_LOG", "off")
            .env("XDG_CACHE_HOME", std::env::temp_dir().join("airlock-test-cache"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let expected_path = path.with_extension("err");
        if std::env::var_os("AIRLOCK_BLESS").is_some() {
            std::fs::write(&expected_path, &stderr).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} is missing (run with AIRLOCK_BLESS=1 and review it)", expected_path.display()));
        assert_eq!(stderr, expected, "{name}: error text changed");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} fixtures found");
}

#[test]
fn good_configs_pass_check() {
    for config in ["../../examples/quickstart/airlock.toml", "good-full.toml"] {
        let output = Command::new(airlock_binary())
            .args(["check", "-c", config])
            .current_dir(fixture(""))
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains(": ok ("));
        if config.contains("quickstart") {
            // Counted in words that agree with the numbers.
            assert!(String::from_utf8_lossy(&output.stdout).contains("(4 routes, 1 upstream, "), "{}", String::from_utf8_lossy(&output.stdout));
        }
    }
}

/// Writes `config` as `airlock.toml` in `dir` and runs `airlock <command> -c airlock.toml` there
/// with `RUST_LOG=<log>`: its exit status and its stderr.
fn airlock_on(dir: &std::path::Path, command: &str, log: &str, config: &str) -> (std::process::ExitStatus, String) {
    std::fs::write(dir.join("airlock.toml"), config).unwrap();
    let output = Command::new(airlock_binary())
        .args([command, "-c", "airlock.toml"])
        .current_dir(dir)
        .env("RUST_LOG", log)
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("airlock-test-cache"))
        .output()
        .unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A port another process holds stops `run` with the config line to change, for the client
/// listeners and for the admin listener alike.
#[test]
fn a_port_in_use_is_reported_at_its_address() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n"),
            format!("airlock.toml:2:11: `listeners[0].address`: cannot listen on 127.0.0.1:{port}: "),
        ),
        (
            format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:{port}\"\n"),
            format!("airlock.toml:5:11: `admin.address`: cannot listen on 127.0.0.1:{port}: "),
        ),
    ];
    for (config, expected) in cases {
        let route = "[[routes]]\npath_prefix = \"/\"\nplugins = [{ plugin = \"builtin:respond\", config = { status = 200 } }]\n";
        let (status, stderr) = airlock_on(dir.path(), "run", "off", &format!("{config}\n{route}"));
        assert!(!status.success(), "{config}: started on a held port");
        assert!(stderr.contains(&expected), "{config}: {stderr}");
        assert!(stderr.contains("another process (another gateway?) holds it"), "{stderr}");
    }
    drop(held);
}

/// An access log that cannot be opened only shows at `run` (here a link to a folder that is not
/// there; a file the gateway's user may not write is the same): `run` stops with the error at
/// `access_log.path`'s line, as `check` reports the problems it can see.
#[test]
fn an_access_log_that_cannot_be_opened_is_reported_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.path().join("no-such-folder/access.log"), dir.path().join("access.log")).unwrap();
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\n[access_log]\nenabled = true\npath = \"access.log\"\n\n\
                  [[routes]]\npath = \"/\"\nplugins = [{ plugin = \"builtin:respond\" }]\n";
    let (status, stderr) = airlock_on(dir.path(), "run", "off", config);
    assert!(!status.success(), "started: {stderr}");
    assert!(stderr.contains("airlock.toml:8:8: `access_log.path`: cannot open access log `access.log`: No such file or directory"), "{stderr}");
}

/// With `--log-format json`, a gateway that cannot start says why in a JSON event like every
/// other line it logs (a log pipeline parsing its stderr loses nothing), the located config
/// error in its `error` field.
#[test]
fn a_startup_error_under_json_logs_is_one_json_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("airlock.toml"), "[[routes]]\npath = \"/a\"\nupstream = \"nowhere\"\n").unwrap();
    let output = Command::new(airlock_binary())
        .args(["--log-format", "json", "run", "-c", "airlock.toml"])
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("airlock-test-cache"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events: Vec<serde_json::Value> =
        stderr.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))).collect();
    let failure = events.iter().find(|e| e["level"] == "ERROR").unwrap_or_else(|| panic!("no error event: {stderr}"));
    assert_eq!(failure["fields"]["message"], "cannot start", "{failure}");
    let error = failure["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("airlock.toml:3:12: `routes[0].upstream`: no upstream named `nowhere`"), "{error}");
}

/// A CORS route that lists `methods` without `OPTIONS` never sees a browser's preflight (it
/// finds no route): `check` says so, and says nothing once `OPTIONS` is listed.
#[test]
fn a_cors_route_without_options_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for (methods, warned) in [(r#"["POST"]"#, true), (r#"["POST", "OPTIONS"]"#, false), ("[]", false)] {
        let config = format!(
            "[[routes]]\npath = \"/items\"\nmethods = {methods}\nplugins = [{{ plugin = \"builtin:cors\", config = {{ origins = [\"https://a.example\"] }} }}, {{ plugin = \"builtin:respond\" }}]\n"
        );
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{methods}: {stderr}");
        assert_eq!(stderr.contains("routes[0].methods leaves out OPTIONS"), warned, "{methods}: {stderr}");
    }
}

/// An authentication plugin with `failure = "open"` lets requests through unauthenticated
/// whenever it fails: `check` says so for the built-in ones, and not for other plugins.
#[test]
fn an_auth_plugin_failing_open_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for (source, entry, warned) in [("builtin:key-auth", "{}", true), ("builtin:acl", "{ allow = [\"a\"] }", true), ("builtin:headers", "{}", false)] {
        let config = format!(
            "[plugins.p]\nsource = \"{source}\"\nfailure = \"open\"\n\n[[routes]]\npath = \"/a\"\nplugins = [{{ plugin = \"p\", config = {entry} }}, {{ plugin = \"builtin:respond\" }}]\n"
        );
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{source}: {stderr}");
        let warning = format!("routes[0]: {source} has failure = \"open\": whenever it fails");
        assert_eq!(stderr.contains(&warning), warned, "{source}: {stderr}");
    }
}

/// A plugin that decides by the consumer (acl, quota, rate-limit by consumer) before the
/// authentication plugin naming it sees none: acl and quota refuse everyone, rate-limit counts
/// by IP with no plan. `check` says so, at its entry; not for a limit by IP ahead of
/// authentication (against guessing), nor after it.
#[test]
fn a_plugin_deciding_by_consumer_before_authentication_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = "[[consumers]]\nid = \"alice\"\ncredentials = { keys = [\"alice-key\"] }\n\n";
    for (first, second, warned) in [
        ("{ plugin = \"builtin:rate-limit\", config = { limits = [{ limit = 10, window = \"minute\" }] } }", "{ plugin = \"builtin:key-auth\" }", Some("builtin:rate-limit runs before builtin:key-auth (routes[0].plugins[1])")),
        ("{ plugin = \"builtin:acl\", config = { allow = [\"alice\"] } }", "{ plugin = \"builtin:key-auth\" }", Some("builtin:acl runs before")),
        ("{ plugin = \"builtin:rate-limit\", config = { limits = [{ limit = 10, window = \"minute\" }], by = [\"ip\"] } }", "{ plugin = \"builtin:key-auth\" }", None),
        ("{ plugin = \"builtin:key-auth\" }", "{ plugin = \"builtin:acl\", config = { allow = [\"alice\"] } }", None),
    ] {
        let config = format!("{consumer}[[routes]]\npath = \"/a\"\nplugins = [{first}, {second}, {{ plugin = \"builtin:respond\" }}]\n");
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{first}: {stderr}");
        match warned {
            Some(warning) => assert!(stderr.contains(warning) && stderr.contains("routes[0].plugins[0]"), "{first}: {stderr}"),
            None => assert!(!stderr.contains("which names the consumer"), "{first}: {stderr}"),
        }
    }
}

/// `builtin:cors` after an authentication plugin never answers a preflight (it carries no
/// credentials: refused 401, without CORS headers, first): `check` says so at the cors entry;
/// cors first is not warned about.
#[test]
fn cors_after_authentication_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let cors = "{ plugin = \"builtin:cors\", config = { origins = [\"https://app.example.com\"] } }";
    let auth = "{ plugin = \"builtin:key-auth\" }";
    let consumer = "[[consumers]]\nid = \"alice\"\ncredentials = { keys = [\"alice-key\"] }\n\n";
    for (chain, warned) in [(format!("{auth}, {cors}"), true), (format!("{cors}, {auth}"), false)] {
        let config = format!("{consumer}[[routes]]\npath = \"/a\"\nplugins = [{chain}, {{ plugin = \"builtin:respond\" }}]\n");
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{chain}: {stderr}");
        let said = stderr.contains("routes[0].plugins[1]: builtin:cors runs after builtin:key-auth (routes[0].plugins[0])");
        assert_eq!(said, warned, "{chain}: {stderr}");
    }
}

/// A cache before a limit or a validator answers hits they never see (not counted, an invalid
/// request answered 200), and a header built from `${context.consumer}` before authentication
/// is built empty: `check` says so at the first entry; not with the order the other way round.
#[test]
fn a_cache_before_a_limit_and_a_consumer_header_before_authentication_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = "[[consumers]]\nid = \"alice\"\ncredentials = { keys = [\"alice-key\"] }\n\n";
    let cache = "{ plugin = \"builtin:proxy-cache\" }";
    let limit = "{ plugin = \"builtin:rate-limit\", config = { limits = [{ limit = 10, window = \"minute\" }], by = [\"ip\"] } }";
    let header = "{ plugin = \"builtin:headers\", config = { request = { set = { \"x-user\" = \"${context.consumer}\" } } } }";
    let auth = "{ plugin = \"builtin:key-auth\" }";
    for (chain, warning) in [
        (format!("{auth}, {cache}, {limit}"), Some("routes[0].plugins[1]: builtin:proxy-cache runs before builtin:rate-limit (routes[0].plugins[2])")),
        (format!("{auth}, {limit}, {cache}"), None),
        (format!("{header}, {auth}"), Some("routes[0].plugins[0]: builtin:headers runs before builtin:key-auth (routes[0].plugins[1])")),
        (format!("{auth}, {header}"), None),
    ] {
        let config = format!("{consumer}[[routes]]\npath = \"/a\"\nplugins = [{chain}, {{ plugin = \"builtin:respond\" }}]\n");
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{chain}: {stderr}");
        match warning {
            Some(warning) => assert!(stderr.contains(warning), "{chain}: {stderr}"),
            None => assert!(!stderr.contains("runs before"), "{chain}: {stderr}"),
        }
    }
}

/// A method no HTTP or WebDAV RFC defines (`GETT`) is allowed, an extension, but warned about:
/// a typo leaves the route unreachable by the method meant.
#[test]
fn an_unknown_method_in_a_route_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for (methods, warned) in [("[\"GETT\"]", true), ("[\"get\", \"PROPFIND\", \"PURGE\"]", false)] {
        let config = format!("[[routes]]\npath = \"/a\"\nmethods = {methods}\nplugins = [{{ plugin = \"builtin:respond\" }}]\n");
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", &config);
        assert!(status.success(), "{methods}: {stderr}");
        assert_eq!(stderr.contains("routes[0].methods: `GETT` is no method HTTP or WebDAV defines"), warned, "{methods}: {stderr}");
    }
}

/// A config with no routes is valid (the admin listener serves) but answers every request 404:
/// `check` says so, as for an empty file.
#[test]
fn a_config_without_routes_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    for (config, warned) in [("", true), ("[limits]\nmax_headers = 50\n", true), ("[[routes]]\npath = \"/\"\nplugins = [{ plugin = \"builtin:respond\" }]\n", false)] {
        let (status, stderr) = airlock_on(dir.path(), "check", "warn", config);
        assert!(status.success(), "{config:?}: {stderr}");
        assert_eq!(stderr.contains("the config has no `[[routes]]`"), warned, "{config:?}: {stderr}");
    }
}

/// `--watch-interval-ms` without `--watch` would be ignored: the CLI refuses it instead.
#[test]
fn a_watch_interval_without_watch_is_refused() {
    let output = Command::new(airlock_binary()).args(["run", "--watch-interval-ms", "50", "-c", "none.toml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--watch"), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `trust_incoming = "trusted_proxies"` with no listener naming any trusts no one: said at
/// `check`, and not said when a listener names some.
#[test]
fn check_warns_of_trusting_proxies_where_there_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "\n[[routes]]\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\nconfig = { status = 204 }\n";
    let none = format!("[tracing]\ntrust_incoming = \"trusted_proxies\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n{routes}");
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", &none);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("no listener has trusted_proxies"), "{stderr}");
    let some = none.replace("address = \"127.0.0.1:0\"\n", "address = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", &some);
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("trusted_proxies"), "{stderr}");
}

/// `check` says what `run` would only show later: an admin listener open beyond loopback
/// without a token, and a route that can only answer 502 (no upstream, no plugin).
#[test]
fn check_warns_of_an_open_admin_listener_and_a_route_that_can_only_fail() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[admin]\naddress = \"0.0.0.0:0\"\n\n[[routes]]\nid = \"nowhere\"\npath = \"/x\"\n";
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", config);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("reachable beyond this machine without admin.token"), "{stderr}");
    assert!(stderr.contains("routes[0] has neither an upstream nor a plugin"), "{stderr}");
    // A route whose plugin was refused has one: its error says what is wrong, and no warning
    // says otherwise.
    let refused = "[[routes]]\npath = \"/x\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\nconfig = { status = 42 }\n";
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", refused);
    assert!(!status.success() && stderr.contains("invalid status 42"), "{stderr}");
    assert!(!stderr.contains("neither an upstream nor a plugin"), "{stderr}");
}

/// A `trusted_proxies` or `proxy_protocol_from` CIDR with host bits set (`10.1.2.3/8`) is its
/// whole network: `check` says so, naming the network it means.
#[test]
fn check_warns_of_a_cidr_with_host_bits_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.1.2.3/8\"]\ntrusted_proxies = [\"192.168.1.0/24\", \"172.16.5.4/12\"]\n";
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", config);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("listeners[0].proxy_protocol_from[0]: `10.1.2.3/8` has host bits set: it means 10.0.0.0/8"), "{stderr}");
    assert!(stderr.contains("listeners[0].trusted_proxies[1]: `172.16.5.4/12` has host bits set: it means 172.16.0.0/12"), "{stderr}");
    assert!(!stderr.contains("trusted_proxies[0]"), "a network written as one is not warned of: {stderr}");
    assert!(!stderr.contains("believes a PROXY header from any peer"), "{stderr}");
    // Without `proxy_protocol_from`, any peer may announce any client: said, not refused.
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n";
    let (status, stderr) = airlock_on(dir.path(), "check", "warn", config);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("listeners[0]: `proxy_protocol = true` without `proxy_protocol_from` believes a PROXY header from any peer"), "{stderr}");
}

/// Starts a gateway on `config`, which must be refused; the error, after checking it is located
/// at `line` of `config` (three more in the file: the test harness puts a listener first).
async fn refused_at(config: &str, line: usize) -> String {
    let err = airlock_tests::Gateway::try_start(config, None).await.err().expect("refused").to_string();
    assert!(err.contains(&format!("airlock.toml:{}:", line + 3)), "not at line {line}: {err}");
    err
}

/// TOML a plugin's JSON config cannot carry: `nan` is refused at its line, where before it
/// reached the plugin as `null` (a key left out) and `check` said ok.
#[tokio::test]
async fn a_plugin_config_value_json_cannot_hold_is_refused_at_its_line() {
    let config = "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\n[routes.plugins.config]\nstatus = 200\nbody = nan\n";
    let err = refused_at(config, 7).await;
    assert!(err.contains("`routes[0].plugins[0].config.body`: `nan`") && err.contains("no NaN or infinity"), "{err}");
}

/// A plugin that cannot start within its memory cap is reported at the cap to raise
/// (`memory_mb`), not at its chain entry's config, which is fine.
#[tokio::test]
async fn a_memory_cap_too_small_to_start_is_reported_at_memory_mb() {
    let config = "[plugins.tiny]\nsource = \"builtin:headers\"\nmemory_mb = 1\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"tiny\"\nconfig = { request = { set = { \"x-a\" = \"1\" } } }\n";
    let err = refused_at(config, 3).await;
    assert!(err.contains("`plugins.tiny.memory_mb`") && err.contains("memory cap of 1 MiB exceeded"), "{err}");
}

/// A capability granted twice is a config error at the second: a grant is a security decision,
/// and a repeated one was likely meant as another.
#[tokio::test]
async fn a_capability_listed_twice_is_refused() {
    let config = "[plugins.p]\nsource = \"builtin:rate-limit\"\ncapabilities = [\"state\",\n  \"state\"]\n\n[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"p\"\nconfig = { limits = [{ limit = 1, window = \"minute\" }] }\n";
    let err = refused_at(config, 4).await;
    assert!(err.contains("capability `state` is listed twice"), "{err}");
}
