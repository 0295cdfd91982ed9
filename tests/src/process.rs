//! The real `airlock` binary as a child process, for tests that signal it (reload, shutdown,
//! stopping the whole process) or run it as operators do.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::metrics::sample;
use crate::{HttpClient, Upstream, airlock_binary, render};

/// Where [`GatewayProcess::start_logging`] writes the gateway's log, in its directory.
const LOG_FILE: &str = "airlock.log";

/// A free loopback port (bound, then released for the binary to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The `airlock` binary serving a config file in a temporary directory; killed if a test fails.
pub struct GatewayProcess {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    admin: u16,
}

impl GatewayProcess {
    /// Writes `config` (`{upstream}` substituted, listener and admin on free ports) and starts
    /// `airlock run -c airlock.toml <args>` on it; waits until it serves.
    pub async fn start(config: &str, upstream: &Upstream, args: &[&str]) -> Self {
        Self::spawn(config, upstream, args, false, "warn", None).await
    }

    /// [`Self::start`], with the log written to a file that [`Self::log`] reads.
    pub async fn start_logging(config: &str, upstream: &Upstream, args: &[&str]) -> Self {
        Self::spawn(config, upstream, args, true, "warn", None).await
    }

    /// [`Self::start_logging`] under an open-file limit (`RLIMIT_NOFILE`, soft and hard) of
    /// `open_files`, as `ulimit -n` sets it: for tests of running out of descriptors.
    pub async fn start_logging_with_open_files(config: &str, upstream: &Upstream, open_files: u64) -> Self {
        Self::spawn(config, upstream, &[], true, "warn", Some(open_files)).await
    }

    /// [`Self::start_logging`] with `RUST_LOG` set to `rust_log` instead of `warn`.
    pub async fn start_logging_at(config: &str, upstream: &Upstream, rust_log: &str) -> Self {
        Self::spawn(config, upstream, &[], true, rust_log, None).await
    }

    async fn spawn(config: &str, upstream: &Upstream, args: &[&str], log_to_file: bool, rust_log: &str, open_files: Option<u64>) -> Self {
        // The ports are free when picked but only taken when the binary binds them: a test
        // running in parallel (its gateway, or an outgoing connection's ephemeral port) can take
        // one in between, and the binary then exits at startup. Such a start is tried again on
        // new ports; a config the binary refuses fails every attempt.
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            let dir = tempfile::tempdir().expect("tempdir");
            let (port, admin) = (free_port(), free_port());
            write_config(dir.path(), port, admin, config, upstream);
            let stderr = match log_to_file {
                true => Stdio::from(std::fs::File::create(dir.path().join(LOG_FILE)).expect("create the log file")),
                false => Stdio::inherit(),
            };
            let mut command = Command::new(airlock_binary());
            command
                .args(["run", "-c", "airlock.toml"])
                .args(args)
                .current_dir(dir.path())
                .env("RUST_LOG", rust_log)
                .stdout(Stdio::null())
                .stderr(stderr);
            if let Some(n) = open_files {
                limit_open_files(&mut command, n);
            }
            let child = command.spawn().expect("start airlock");
            let mut airlock = Self { child, dir, port, admin };
            match airlock.listening().await {
                Ok(()) => return airlock,
                Err(exited) if attempt < ATTEMPTS => eprintln!("attempt {attempt}: {exited}; trying other ports"),
                Err(exited) => panic!("{exited} ({ATTEMPTS} attempts)"),
            }
            attempt += 1;
        }
    }

    /// Waits until both listeners answer, and the process is still running a moment later (a
    /// port another process holds answers too, but then this one has exited).
    async fn listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Err(format!("airlock exited early ({status})"));
            }
            let main = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
            if main && tokio::net::TcpStream::connect(("127.0.0.1", self.admin)).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return match self.child.try_wait().expect("wait") {
                    Some(status) => Err(format!("airlock exited early ({status})")),
                    None => Ok(()),
                };
            }
            assert!(Instant::now() < deadline, "airlock did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the gateway logged so far (started with [`Self::start_logging`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// Replaces the config file (same listener and admin ports).
    pub fn write(&self, config: &str, upstream: &Upstream) {
        write_config(self.dir.path(), self.port, self.admin, config, upstream);
    }

    /// Removes the config file (a reload then has nothing to read).
    pub fn remove_config(&self) {
        std::fs::remove_file(self.dir.path().join("airlock.toml")).expect("remove the config file");
    }

    /// `http://listener` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://admin-listener` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// The listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    /// Sends signal `name` (`TERM`, `HUP`, `STOP`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("kill").success());
    }

    /// A sample of the admin listener's `/metrics`.
    pub async fn metric(&self, client: &HttpClient, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = client.get(&self.admin_url("/metrics")).await.text();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics");
        sample(&scrape, name, labels)
    }

    /// Waits until `name{labels}` reaches `value`.
    pub async fn metric_reaches(&self, client: &HttpClient, name: &str, labels: &[(&str, &str)], value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.metric(client, name, labels).await;
            if now == value {
                return;
            }
            assert!(Instant::now() < deadline, "{name}{labels:?} stayed at {now}, expected {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit within `limit`; returns its exit status.
    pub async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < limit, "airlock did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes the config whole, then renames it over `airlock.toml`, so a watcher never reads half.
/// Sets the child's open-file limit (soft and hard) to `n` between fork and exec.
fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let limit = rustix::process::Rlimit { current: Some(n), maximum: Some(n) };
    // SAFETY: the closure runs in the forked child before exec and makes one system call
    // (setrlimit, async-signal-safe); it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).map_err(Into::into));
    }
}

fn write_config(dir: &Path, port: u16, admin: u16, config: &str, upstream: &Upstream) {
    let text = format!("[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n{config}");
    let text = render(&text, Some(upstream));
    let partial = dir.join("airlock.toml.partial");
    std::fs::write(&partial, text).expect("write config");
    std::fs::rename(partial, dir.join("airlock.toml")).expect("rename config");
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
