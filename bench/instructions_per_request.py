#!/usr/bin/env python3
"""Instructions the gateway executes per request, counted by callgrind (valgrind, Debian
package): repeatable to about 1% (how often the event loops wake varies with timing), where
CPU time on this shared 2-core machine swings by 10% from one run to the next. For each binary given, start it under callgrind with
instrumentation off and one of compare.py's configs (nginx `return 200` upstream), send 500
keep-alive requests to warm it up, switch instrumentation on, send N (default 4,000; h2load
-c4, HTTP/1.1), switch it off, and divide the instructions counted by N. The counts cover the
whole process over those requests (its workers, hyper, tokio, libc), not the kernel.
glibc's memcpy copies large blocks with `rep movsb`, which callgrind counts once per byte (a
10 KB copy: 10,000 "instructions", ~300 cycles): the gateway runs with that path off
(GLIBC_TUNABLES, below), so a copy counts as the vector loop's instructions it also runs as.

Run by hand:  bench/instructions_per_request.py "no plugins" BINARY [BINARY ...]
valgrind cannot reserve the address space of wasmtime's pooling allocator: build each BINARY
with the on-demand one, `cargo build --release -p airlock --bin airlock --features
on-demand-instances` (cases with plugins then also pay on-demand instantiation where the
pooling allocator would reuse a slot; warm calls are the same). "hyper floor" as the case
measures `bench/hyper_floor.rs` built beside each BINARY instead.
"""
import sys, os, subprocess, signal, tempfile, importlib.util, atexit, shutil
from pathlib import Path
spec = importlib.util.spec_from_file_location("compare", Path(__file__).resolve().parent / "compare.py"); c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
case = sys.argv[1] if len(sys.argv) > 1 else ""; bins = sys.argv[2:]
N = int(os.environ.get("N", "4000"))
# memcpy's `rep movsb` path only past 1 GiB: never, here (see the docstring).
REP_MOVSB_OFF = "glibc.cpu.x86_rep_movsb_threshold=1073741824"
if not bins:
    sys.exit(__doc__)
if subprocess.run(["sh", "-c", "command -v valgrind"], capture_output=True).returncode != 0:
    subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True)
name, kind, config = c.find_case(case, ("airlock", "floor"))
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # configs, logs, load output
up = c.start_nginx(tmp, "upstream", c.UPSTREAM_PORT, 'return 200 "ok";', 2, "")
path = Path(tmp) / "a.toml"; path.write_text(config or "")

def load(n):
    subprocess.run(["h2load", "--h1", f"-n{n}", "-c4", "-H", "x-api-key: bench-key", f"http://127.0.0.1:{c.AIRLOCK_PORT}/"], capture_output=True, check=True)

def instructions(binary):
    out = Path(tmp) / f"callgrind-{Path(binary).name}-{os.getpid()}"
    cmd = c.floor_command(binary, os.cpu_count()) if kind == "floor" else [binary, "run", "-c", str(path)]
    c.ensure_free(c.AIRLOCK_PORT)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"] + cmd, env=dict(os.environ, RUST_LOG="warn", GLIBC_TUNABLES=":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), REP_MOVSB_OFF]))), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c.wait_port(c.AIRLOCK_PORT, timeout=180)
        load(500)
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True, check=True)
        load(N)
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True, check=True)
    finally:
        p.send_signal(signal.SIGTERM); p.wait(); c.wait_port_free(c.AIRLOCK_PORT)
    totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
    out.unlink()
    return int(totals[0].split()[1])

try:
    print(f"case: {name}; instructions per request under callgrind ({N} requests after 500)")
    for b in bins:
        print(f"{b:40s} {instructions(b) / N:9.0f}")
finally:
    up.send_signal(3); up.wait()
