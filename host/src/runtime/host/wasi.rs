//! The WASI baseline every plugin gets, and nothing more of WASI.
//!
//! A Rust std guest built for wasm32-wasip2 imports `wasi:io/*` and `wasi:cli/*` even when it uses
//! nothing else (DESIGN.md section 2). Those are linked here with harmless implementations: an empty
//! environment and no arguments, no stdin, stdout and stderr into the gateway log with the plugin's
//! name, `exit` as a trap. Clocks and random are harmless too. Sockets and every other WASI
//! interface are never linked: a component importing them is refused at load (see
//! `runtime::capabilities`), and even so the socket switches are turned off here.
//!
//! `wasi:filesystem` is linked for capability `files`: only components granted it pass the load
//! check, and their instances get exactly one preopen, the granted directory, read-only, as `/`.
//! Every other instance has no preopen, so it could open nothing even if it got past the check.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::HostState;
use super::log::LogBudget;

/// Longest single stdout/stderr write a plugin may make (cuts a flood down to log-sized lines).
const MAX_STDIO_WRITE: usize = 4096;

/// Where a plugin granted `files` sees its directory.
pub const FILES_GUEST_PATH: &str = "/";

/// The WASI context of a plugin instance: nothing from the host process leaks in.
pub fn baseline_ctx(log: &Arc<LogBudget>) -> WasiCtx {
    builder(log).build()
}

/// The WASI context of an instance granted `files`: the baseline plus `dir`, read-only, as `/`.
/// Opening the directory is one local `open` syscall per instance.
pub fn files_ctx(log: &Arc<LogBudget>, dir: &Path) -> Result<WasiCtx, String> {
    let mut builder = builder(log);
    builder
        .preopened_dir(dir, FILES_GUEST_PATH, FsPerms::ReadOnly)
        .map_err(|e| format!("cannot open the granted directory `{}`: {e}", dir.display()))?;
    Ok(builder.build())
}

/// Most bytes one `wasi:random` call may ask for (a larger ask traps). wasmtime-wasi allows 64
/// MiB, made on the host in one step no deadline checks (190 ms of a worker for 50 MB in a
/// release build, a copy outside the plugin's memory cap); std and `getrandom` ask for a few
/// bytes at a time.
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;

fn builder(log: &Arc<LogBudget>) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .max_random_size(MAX_RANDOM_BYTES)
        .stdout(LogStdio { log: log.clone(), stream: "stdout" })
        .stderr(LogStdio { log: log.clone(), stream: "stderr" })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder
}

/// Links `wasi:filesystem` (types and preopens), for capability `files`.
pub fn add_files_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
    use wasmtime_wasi::p2::bindings::filesystem;
    filesystem::types::add_to_linker::<HostState, WasiFilesystem>(linker, HostState::filesystem)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(linker, HostState::filesystem)?;
    Ok(())
}

/// Links exactly the WASI baseline interfaces into `linker`.
pub fn add_baseline_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::{WasiView, p2::bindings::io};

    io::error::add_to_linker::<HostState, IoTable>(linker, |s| &mut s.table)?;
    io::poll::add_to_linker::<HostState, IoTable>(linker, |s| &mut s.table)?;
    io::streams::add_to_linker::<HostState, IoTable>(linker, |s| &mut s.table)?;

    use wasmtime_wasi::cli::WasiCliView as _;
    use wasmtime_wasi::clocks::WasiClocksView as _;
    let l = linker;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    Ok(())
}

/// `wasi:io` host functions only need the resource table.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut wasmtime::component::ResourceTable;
}

/// A plugin's stdout or stderr: each line written becomes a log line carrying the plugin's name,
/// as its call's log budget allows.
#[derive(Clone)]
struct LogStdio {
    log: Arc<LogBudget>,
    stream: &'static str,
}

impl LogStdio {
    fn emit(&self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_STDIO_WRITE)];
        let index = usize::from(self.stream == "stderr");
        // Whole lines only: the pieces of one `eprintln!` come as separate writes.
        let text = self.log.complete_lines(index, &String::from_utf8_lossy(bytes), MAX_STDIO_WRITE);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if self.stream == "stderr" && !self.log.note_stderr(line) {
                continue;
            }
            if !self.log.take() {
                return;
            }
            self.log.stdio_line(self.stream, line);
        }
    }
}

impl IsTerminal for LogStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStdio {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_STDIO_WRITE)
    }
}

impl AsyncWrite for LogStdio {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.emit(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
