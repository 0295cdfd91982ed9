//! The `airlock` command: run the gateway, check a config, the plugin author's tools
//! (`airlock plugin new/test/keygen/sign/verify`) and the security team's (`inspect`, `audit`).

use std::path::PathBuf;
use std::process::ExitCode;

use airlock::config::{ConfigError, ConfigSource, QUICKSTART};
use airlock::plugin_trial::{self, Trial};
use airlock::scaffold::SdkSource;
use airlock::signing::{self, PublicKey};
use clap::{Parser, Subcommand, ValueEnum};
use airlock::telemetry::log_filter::LogFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Airlock: an API gateway whose every policy phase runs in a sandboxed WebAssembly component.
#[derive(Parser)]
#[command(name = "airlock", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "airlock.toml", conflicts_with = "quickstart")]
        config: PathBuf,
        /// Run the embedded quickstart config with the demo upstream on 127.0.0.1:9090.
        #[arg(long)]
        quickstart: bool,
        /// Also start the demo echo upstream on 127.0.0.1:9090 (for examples).
        #[arg(long)]
        demo_upstream: bool,
        /// Reload when the config file's content changes, or a file it reads (a certificate, a
        /// key, a password file, a plugin component): checked every `--watch-interval-ms`.
        /// SIGHUP and `POST /admin/reload` reload with or without it.
        #[arg(long, conflicts_with = "quickstart")]
        watch: bool,
        /// How often `--watch` reads the config file, in milliseconds.
        #[arg(long, requires = "watch", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        watch_interval_ms: u64,
    },
    /// Validate a config: parse it, load and configure every plugin, and report every problem.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "airlock.toml")]
        config: PathBuf,
    },
    /// Show what a plugin component is and asks for: hash, contract, imports and capabilities,
    /// phases, signature.
    Inspect {
        /// `builtin:<name>` or a path to a `.wasm` component.
        plugin: String,
        /// A trusted public key (`ed25519:...` or a `.pub` file) to check its signature against
        /// (repeatable).
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// For every route of a config: each plugin's requested and granted capabilities, limits,
    /// isolation, failure policy and signature.
    Audit {
        /// Config file.
        #[arg(short, long, default_value = "airlock.toml")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin crate (builds with `cargo build --target wasm32-wasip2 --release`).
    New {
        /// Plugin (and crate) name: lower-case letters, digits and `-`.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on the airlock-sdk in this directory (default: the SDK beside the sources this
        /// binary was built from; without those, pass this or --sdk-git: airlock-sdk is not on
        /// crates.io).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// Depend on the airlock-sdk of this git repository.
        #[arg(long)]
        sdk_git: Option<String>,
    },
    /// Make an ed25519 key pair for signing plugins: KEY (private, PKCS#8 PEM) and KEY.pub.
    Keygen {
        /// Where to write the private key (the public key goes to `<out>.pub`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component: writes `<plugin>.sig` beside it.
    Sign {
        /// The `.wasm` component.
        plugin: PathBuf,
        /// The private key file from `airlock plugin keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a component's `<plugin>.sig` against trusted keys.
    Verify {
        /// The `.wasm` component.
        plugin: PathBuf,
        /// A trusted public key (`ed25519:...` or a `.pub` file); repeatable.
        #[arg(long = "trusted-key", required = true)]
        trusted_keys: Vec<String>,
    },
    /// Run requests through a plugin, outside a gateway, and print what it decided.
    Test {
        /// `builtin:<name>` or a path to a `.wasm` component.
        plugin: String,
        /// A request, as a `.http` file: request line, headers, blank line, body (repeatable:
        /// the requests run in order, sharing the plugin's pool and its `state`).
        #[arg(long, required = true)]
        request: Vec<PathBuf>,
        /// Run the whole sequence of requests N times (default 1, at most 10000). With it, or
        /// with several requests, each outcome is numbered and a summary follows; `--json`
        /// prints an array.
        // Read as text and checked by `test_plugin`: a bad N is exit status 1 (bad input), not
        // the parser's 2, which this command keeps for a plugin that failed. Hyphens are let in
        // so `-1` is a bad N, not an unknown flag.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        repeat: Option<String>,
        /// The upstream's response to every request, as a `.http` file (default: 200 with an
        /// empty body).
        #[arg(long)]
        response: Option<PathBuf>,
        /// The chain entry's config, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// A route param, `name=value` (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// A request context entry set by earlier plugins, `key=value` (repeatable).
        #[arg(long = "context", value_parser = key_value)]
        context: Vec<(String, String)>,
        /// Grant `files`: the directory the plugin may read (as `files = { dir = ... }`).
        #[arg(long = "files-dir")]
        files_dir: Option<PathBuf>,
        /// Grant `http-client` to this origin, e.g. `https://idp.example.com` (repeatable; as
        /// `http_client = { allow = [...] }`).
        #[arg(long = "allow-origin")]
        allow_origins: Vec<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected key=value, found `{s}`"))
}

/// mimalloc instead of glibc's malloc: 6-9% less CPU per proxied request (bench/README.md), asked
/// for memory as `malloc` is ([`airlock::allocator`]). Built with `no_thp`, so it does not ask for
/// transparent huge pages on its arenas, which doubled the resting RSS. Feature `system-alloc`
/// keeps glibc's, for heaptrack (`bench/allocs_per_request.py`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: airlock::allocator::GatewayAllocator = airlock::allocator::GatewayAllocator;

/// Writes a report to stdout. A reader that went away (`airlock audit | head`) ends the
/// output, not the program: the command still exits with its own status.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| if newline { stdout.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written.and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write to stdout: {e}");
    }
}

/// `print!` to stdout through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*), false) };
}

/// `println!` to stdout through [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*), true) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (filter, unreadable) = LogFilter::from_env();
    let (targets, env_filter) = filter.into_layers();
    let subscriber = tracing_subscriber::registry().with(targets).with(env_filter);
    // Colours only for a terminal: a file, a pipe, journald or `docker logs` get plain text.
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => subscriber.with(lines).init(),
        LogFormat::Json => subscriber.with(lines.json()).init(),
    }
    if let Some(problem) = unreadable {
        tracing::warn!("{problem}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check { config } => check(config).await,
            Command::Run { config, quickstart, demo_upstream, watch, watch_interval_ms } => {
                let watch = watch.then(|| std::time::Duration::from_millis(watch_interval_ms));
                run(config, quickstart, demo_upstream, watch, cli.log_format).await
            }
            Command::Plugin { command: PluginCommand::New { name, dir, sdk_path, sdk_git } } => new_plugin(name, dir, sdk_path, sdk_git),
            Command::Plugin { command: PluginCommand::Keygen { out } } => keygen(&out),
            Command::Plugin { command: PluginCommand::Sign { plugin, key } } => sign(&plugin, &key),
            Command::Plugin { command: PluginCommand::Verify { plugin, trusted_keys } } => verify(&plugin, &trusted_keys),
            Command::Inspect { plugin, trusted_keys, json } => inspect(&plugin, &trusted_keys, json).await,
            Command::Audit { config, json } => audit(config, json).await,
            Command::Plugin { command: PluginCommand::Test { plugin, request, repeat, response, config, params, context, files_dir, allow_origins, json } } => {
                let trial = Trial { plugin, config_json: config, params, context, files_dir, allow_origins };
                test_plugin(trial, request, repeat, response, json).await
            }
        }
    })
}

async fn check(path: PathBuf) -> ExitCode {
    let source = match ConfigSource::read(&path) {
        Ok(s) => s,
        Err(e) => {
            eprint_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let config = match source.parse() {
        Ok(config) => config,
        Err(e) => {
            eprint_error(&e);
            return ExitCode::FAILURE;
        }
    };
    // Everything `run` reads: every plugin, and the listeners' certificates and addresses. The
    // problems of both are reported together, in line order.
    let built = airlock::build(&source, &config).await;
    let listeners = airlock::server::plan_listeners(&source, &config);
    let loaded = match (built, listeners) {
        (Ok(gateway), Ok(_)) => Ok(gateway),
        (Err(airlock::StartError::Config(ConfigError::Invalid(mut issues))), Err(ConfigError::Invalid(more))) => {
            issues.extend(more);
            issues.sort_by_key(|i| i.line.unwrap_or(0));
            Err(airlock::StartError::Config(ConfigError::Invalid(issues)))
        }
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    };
    match loaded {
        Ok(gateway) => {
            let plugins: usize = gateway.routes.routes().iter().map(|r| r.chain.entries().len()).sum();
            let count = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            outln!(
                "{}: ok ({}, {}, {})",
                source.name,
                count(config.routes.len(), "route", "routes"),
                count(config.upstreams.len(), "upstream", "upstreams"),
                count(plugins, "chain entry", "chain entries")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as pretty JSON or `text` with Display.
fn print_report<T: serde::Serialize + std::fmt::Display>(value: &T, json: bool) -> ExitCode {
    if !json {
        out!("{value}");
        return ExitCode::SUCCESS;
    }
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            outln!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprint_error(&e);
    ExitCode::FAILURE
}

/// Prints an error to stderr, `error: ` before each problem of it: a config's problems are one
/// per line, each followed by its source line (indented), so every one reads as an error.
fn eprint_error(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if !line.starts_with(' ') {
            out.push_str("error: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    eprint!("{out}");
}

/// Trusted keys given on the command line, as key text or `.pub` files.
fn trusted(keys: &[String]) -> Result<Vec<PublicKey>, String> {
    keys.iter()
        .map(|k| {
            if k.starts_with("ed25519:") {
                return PublicKey::parse(k).map_err(|e| format!("--trusted-key: {e}"));
            }
            let text = std::fs::read_to_string(k).map_err(|e| format!("--trusted-key {k}: {e}"))?;
            PublicKey::parse(&text).map_err(|e| format!("--trusted-key {k}: {e}"))
        })
        .collect()
}

fn keygen(out: &std::path::Path) -> ExitCode {
    let (private, public) = match signing::generate() {
        Ok(pair) => pair,
        Err(e) => return fail(e),
    };
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let write_private = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(out)?.write_all(private.as_bytes())
    };
    if let Err(e) = write_private() {
        return fail(format!("{}: {e}", out.display()));
    }
    if let Err(e) = std::fs::write(&public_path, format!("{public}\n")) {
        return fail(format!("{}: {e}", PathBuf::from(&public_path).display()));
    }
    outln!("private key: {} (keep it secret)\npublic key:  {} ({public})", out.display(), PathBuf::from(public_path).display());
    outln!("trust it with:  [trust] require_signatures = true, keys = [\"{public}\"]");
    ExitCode::SUCCESS
}

fn sign(plugin: &std::path::Path, key: &std::path::Path) -> ExitCode {
    let bytes = match std::fs::read(plugin) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", plugin.display())),
    };
    let pem = match std::fs::read_to_string(key) {
        Ok(p) => p,
        Err(e) => return fail(format!("{}: {e}", key.display())),
    };
    match signing::sign(&bytes, &pem, &key.display().to_string()) {
        Ok(sig) => {
            let path = signing::signature_path(plugin);
            if let Err(e) = std::fs::write(&path, sig) {
                return fail(format!("{}: {e}", path.display()));
            }
            outln!("signed: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn verify(plugin: &std::path::Path, keys: &[String]) -> ExitCode {
    let keys = match trusted(keys) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let bytes = match std::fs::read(plugin) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", plugin.display())),
    };
    match signing::verify_file(plugin, &bytes, &keys) {
        Ok(key) => {
            outln!("{}: signature ok, signed by {key}", plugin.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: {e}", plugin.display())),
    }
}

async fn inspect(plugin: &str, keys: &[String], json: bool) -> ExitCode {
    let keys = match trusted(keys) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    match airlock::audit::inspect(plugin, &keys).await {
        // The report is printed either way; a component that cannot load as a plugin fails the
        // command, as it fails `airlock check`.
        Ok(report) => match (print_report(&report, json), &report.load_error) {
            (ExitCode::SUCCESS, Some(_)) => ExitCode::FAILURE,
            (code, _) => code,
        },
        Err(e) => fail(e),
    }
}

async fn audit(path: PathBuf, json: bool) -> ExitCode {
    let source = match ConfigSource::read(&path) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match airlock::load(&source).await {
        Ok((config, gateway)) => print_report(&airlock::audit::audit(&config, &gateway, &source.base_dir), json),
        Err(e) => fail(e),
    }
}

fn new_plugin(name: String, dir: Option<PathBuf>, sdk_path: Option<PathBuf>, sdk_git: Option<String>) -> ExitCode {
    let sdk = match (sdk_path, sdk_git) {
        (Some(path), _) => match path.canonicalize() {
            Ok(p) => SdkSource::Path(p),
            Err(e) => {
                eprintln!("error: --sdk-path {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, Some(url)) => SdkSource::Git(url),
        (None, None) => SdkSource::default_for_this_build(),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    match airlock::scaffold::new_plugin(&name, &dir, &sdk) {
        Ok(files) => {
            for f in files {
                outln!("created {}", f.display());
            }
            if let SdkSource::Registry(version) = &sdk {
                eprintln!(
                    "warning: the SDK sources this binary was built from are gone, so Cargo.toml asks for airlock-sdk {version} \
                     from crates.io, where it is not published: run again with --sdk-path or --sdk-git"
                );
            }
            outln!("\nnext: cd {} && cargo build --target wasm32-wasip2 --release (see its README.md)", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// `airlock plugin test`. One `--request` without `--repeat` prints its outcome (or, with
/// `--json`, its JSON object) as it always did; otherwise each outcome is numbered and a summary
/// follows (`--json`: an array of the outcomes, each with its `index` and `file`, those before a
/// failure included). With `--json` a failure is printed too, as the object or the array's last
/// element ([`plugin_trial::FailureReport`]). Exit status 1 for bad input (nothing runs; a
/// `--repeat` that is not 1 to 10000 included), 2 when the plugin refused its config or failed.
async fn test_plugin(trial: Trial, requests: Vec<PathBuf>, repeat: Option<String>, response: Option<PathBuf>, json: bool) -> ExitCode {
    let single = requests.len() == 1 && repeat.is_none();
    let repeat = match repeat.as_deref().map_or(Ok(1), plugin_trial::parse_repeat) {
        Ok(n) => n,
        Err(e) => {
            eprint_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    // Every file is read and parsed before anything runs; each bad one is reported.
    let mut bad = false;
    let mut files = Vec::with_capacity(requests.len());
    for path in &requests {
        match read(path).and_then(|text| plugin_trial::RequestFile::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())) {
            Ok(file) => files.push(file),
            Err(e) => {
                eprint_error(&e);
                bad = true;
            }
        }
    }
    let resp = match &response {
        Some(path) => read(path).and_then(|text| plugin_trial::parse_response(&path.display().to_string(), &text).map_err(|e| e.to_string())),
        None => Ok(airlock::exchange::ResponseState {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: Some(bytes::Bytes::new()),
            trailers: None,
        }),
    };
    let resp = match resp {
        Ok(resp) if !bad => resp,
        Ok(_) => return ExitCode::FAILURE,
        Err(e) => {
            eprint_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let base = std::env::current_dir().unwrap_or_default();
    // Printed as each request is made, so what ran before a failure is shown.
    let mut printed = 0usize;
    let mut unprintable = None;
    let result = plugin_trial::run_sequence(&trial, &base, &files, &resp, repeat, |step, outcome| {
        match (json, single) {
            (false, true) => out!("{outcome}"),
            (false, false) => {
                if printed > 0 {
                    outln!("");
                }
                out!("{}", plugin_trial::NumberedOutcome { step, outcome });
            }
            (true, true) => match serde_json::to_string_pretty(outcome) {
                Ok(text) => outln!("{text}"),
                Err(e) => {
                    unprintable.get_or_insert(e);
                    return;
                }
            },
            // An array, an element at a time: no run holds every outcome in memory. Each element
            // leads with its `index` and `file`.
            (true, false) => match serde_json::to_string_pretty(&plugin_trial::NumberedOutcome { step, outcome }) {
                Ok(text) => out!("{}\n  {}", if printed == 0 { "[" } else { "," }, text.replace('\n', "\n  ")),
                Err(e) => {
                    unprintable.get_or_insert(e);
                    return;
                }
            },
        }
        printed += 1;
    })
    .await;
    // With `--json` a failure is reported too, where its outcome would have been: the single
    // object, or the array's last element (the array printed even when it is the only one).
    let failure = match (&result, json) {
        (Err(e), true) => match serde_json::to_string_pretty(&e.report(if single { None } else { files.first() })) {
            Ok(text) => Some(text),
            Err(e) => {
                unprintable.get_or_insert(e);
                None
            }
        },
        _ => None,
    };
    match (json, single, failure) {
        (true, true, Some(text)) => outln!("{text}"),
        (true, false, Some(text)) => {
            out!("{}\n  {}", if printed == 0 { "[" } else { "," }, text.replace('\n', "\n  "));
            outln!("\n]");
        }
        (true, false, None) if printed > 0 => outln!("\n]"),
        _ => {}
    }
    match (result, unprintable) {
        (Ok(summary), None) => {
            if !single && !json {
                outln!("\n{summary}");
            }
            ExitCode::SUCCESS
        }
        (Ok(_), Some(e)) => {
            eprint_error(&e);
            ExitCode::FAILURE
        }
        (Err(e), _) => {
            eprintln!("error: {}: {e}", trial.plugin);
            ExitCode::from(2)
        }
    }
}

async fn run(path: PathBuf, quickstart: bool, demo_upstream: bool, watch: Option<std::time::Duration>, format: LogFormat) -> ExitCode {
    // Why the gateway did not start: with `--log-format json`, one JSON event like every other
    // line a log pipeline reads from it (the located config errors in its `error` field).
    let cannot_start = |e: &dyn std::fmt::Display| match format {
        LogFormat::Text => eprint_error(e),
        LogFormat::Json => tracing::error!(error = %e, "cannot start"),
    };
    // From here on SIGHUP means reload (once serving), never the default of exiting.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let mut demo = airlock::demo_upstream::DEMO_UPSTREAM_ADDR;
    if quickstart || demo_upstream {
        match airlock::demo_upstream::spawn_for(quickstart).await {
            Ok(addr) => {
                tracing::info!(%addr, "demo upstream listening");
                demo = addr;
            }
            Err(e) => {
                cannot_start(&format_args!("cannot start the demo upstream on {demo}: {e}"));
                return ExitCode::FAILURE;
            }
        }
    }
    let source = if quickstart {
        let text = airlock::demo_upstream::quickstart_config(QUICKSTART, demo);
        ConfigSource::inline("quickstart/airlock.toml", &text, std::env::current_dir().unwrap_or_default())
    } else {
        match ConfigSource::read(&path) {
            Ok(s) => s,
            Err(e) => {
                cannot_start(&e);
                return ExitCode::FAILURE;
            }
        }
    };
    let running = match airlock::start(&source).await {
        Ok(r) => r,
        Err(e) => {
            cannot_start(&e);
            return ExitCode::FAILURE;
        }
    };
    for addr in running.addrs() {
        tracing::info!(%addr, config = %source.name, "airlock listening");
    }
    if let Some(addr) = running.admin_addr() {
        tracing::info!(%addr, "admin listener (health, ready, metrics, admin API)");
    }
    #[cfg(unix)]
    match hangups {
        Ok(hangups) => airlock::reload::reload_on_sighup(running.live().clone(), hangups),
        Err(e) => tracing::warn!("cannot listen for SIGHUP, reload through POST /admin/reload only: {e}"),
    }
    if let Some(interval) = watch {
        match airlock::reload::reload_on_change(running.live().clone(), interval) {
            Ok(()) => tracing::info!(config = %source.name, "watching the config file, and the files it reads (plugin components included), for changes"),
            Err(e) => return fail(e),
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down (signal again to force)");
    tokio::select! {
        drained = running.shutdown() => {
            if drained {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            } else {
                // Requests were cut at drain_ms: a supervisor should know it was not a clean stop.
                tracing::warn!("stopped, cutting requests still in flight at timeouts.drain_ms");
                ExitCode::FAILURE
            }
        }
        _ = wait_for_signal() => {
            // Requests in flight were abandoned: a supervisor should know it was not a clean stop.
            tracing::warn!("second signal: exiting now, abandoning requests in flight");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
