//! A real `redis-server` for the tests that need one (the Redis state backend, rate limits
//! shared by two gateways), started on a free port and killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::free_port;

/// A `redis-server` on a free port, killed when dropped.
pub struct Redis {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The port it serves TLS on too, if started with [`Redis::start_tls`].
    pub tls_port: Option<u16>,
    /// The password it asks for (`requirepass`), which [`Redis::cmd`] sends first.
    password: Option<String>,
}

impl Redis {
    /// Starts one on `port`, or a free port; waits until it listens.
    pub fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        Self::spawn(port, &[], None, None)
    }

    /// Starts one that also serves TLS, on a port of its own, with the certificate chain `cert`
    /// and its key `key` (PEM files), and asks every client for `password` when given; with
    /// `client_ca` (a PEM file), TLS clients must present a certificate it issued. The cleartext
    /// port stays, for [`Redis::cmd`].
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: Option<&str>, client_ca: Option<&std::path::Path>) -> Self {
        let (port, tls_port) = (free_port(), free_port());
        let mut args: Vec<String> = vec!["--tls-port".into(), tls_port.to_string()];
        match client_ca {
            Some(ca) => args.extend(["--tls-auth-clients".into(), "yes".into(), "--tls-ca-cert-file".into(), ca.display().to_string()]),
            None => args.extend(["--tls-auth-clients".into(), "no".into()]),
        }
        args.extend(["--tls-cert-file".into(), cert.display().to_string(), "--tls-key-file".into(), key.display().to_string()]);
        if let Some(password) = password {
            args.extend(["--requirepass".into(), password.to_owned()]);
        }
        Self::spawn(port, &args, Some(tls_port), password)
    }

    fn spawn(port: u16, extra: &[String], tls_port: Option<u16>, password: Option<&str>) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: install it (tests/run.sh does) ");
        let deadline = Instant::now() + Duration::from_secs(10);
        for listening in [Some(port), tls_port].into_iter().flatten() {
            while std::net::TcpStream::connect(("127.0.0.1", listening)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not listen on {listening}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Self { child, port, tls_port, password: password.map(str::to_owned) }
    }

    /// Kills it (a restart reuses the port: `Redis::start(Some(port))`).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server process (SIGSTOP) without closing anything: connections stay open and
    /// new ones are accepted by the kernel, but nothing is answered, as when a host vanishes
    /// from the network. `thaw` resumes it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// This server, its [`Redis::cmd`] authenticating with `password` from now on (after a
    /// test changed `requirepass`).
    #[must_use]
    pub fn with_password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Sends one command (as the default user) on a connection of its own; returns the answer as
    /// text: a status or error line (`+OK`, `-ERR ...`, `:1`), a bulk string's content, `(nil)`,
    /// or an array's elements, one a line.
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        let encode = |args: &[&str]| {
            let mut request = format!("*{}\r\n", args.len());
            for a in args {
                request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            request
        };
        let mut reader = BufReader::new(stream.try_clone().expect("clone the connection"));
        if let Some(password) = &self.password {
            stream.write_all(encode(&["AUTH", password]).as_bytes()).expect("send to redis-server");
            assert_eq!(read_reply(&mut reader), "+OK", "AUTH");
        }
        stream.write_all(encode(args).as_bytes()).expect("send to redis-server");
        read_reply(&mut reader)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_reply(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read from redis-server");
    let line = line.trim_end();
    let count = || line[1..].parse::<i64>().unwrap_or_else(|_| panic!("bad reply `{line}`"));
    match line.as_bytes().first() {
        Some(b'$') if count() < 0 => "(nil)".to_owned(),
        Some(b'$') => {
            let mut data = vec![0; count() as usize + 2];
            r.read_exact(&mut data).expect("read a bulk string");
            String::from_utf8_lossy(&data[..data.len() - 2]).into_owned()
        }
        Some(b'*') => (0..count().max(0)).map(|_| read_reply(r)).collect::<Vec<_>>().join("\n"),
        _ => line.to_owned(),
    }
}
