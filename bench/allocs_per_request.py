#!/usr/bin/env python3
"""Heap allocations per request in the gateway, counted by heaptrack (Debian package): exact and
repeatable, unlike CPU time on a busy machine. For each binary given, start it under heaptrack
with one of compare.py's configs (nginx `return 200` upstream), send N1 then, in a second run,
N2 keep-alive requests (h2load -c32, HTTP/1.1), and divide the difference in allocation calls by
N2 - N1, so startup and warm-up cancel out.

Run by hand:  bench/allocs_per_request.py "no plugins" BINARY [BINARY ...]
heaptrack sees only malloc's calls, and the gateway allocates through mimalloc: build each BINARY
with glibc's allocator, `cargo build --release -p airlock --bin airlock --features system-alloc`
(a binary that allocates through mimalloc counts none per request, and the script says so).
"""
import sys, os, subprocess, signal, tempfile, importlib.util, re, atexit, shutil
from pathlib import Path
spec = importlib.util.spec_from_file_location("compare", Path(__file__).resolve().parent / "compare.py"); c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
case = sys.argv[1]; bins = sys.argv[2:]
N1, N2 = int(os.environ.get("N1", "2000")), int(os.environ.get("N2", "12000"))
if not bins:
    sys.exit(__doc__)
if subprocess.run(["sh", "-c", "command -v heaptrack"], capture_output=True).returncode != 0:
    subprocess.run(["apt-get", "install", "-y", "-qq", "heaptrack"], check=True)
name, kind, config = c.find_case(case, ("airlock",))
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # configs, logs, load output
up = c.start_nginx(tmp, "upstream", c.UPSTREAM_PORT, 'return 200 "ok";', 2)
path = Path(tmp) / "a.toml"; path.write_text(config)

def allocations(binary, n):
    out = Path(tmp) / f"heap-{os.getpid()}-{n}"
    env = dict(os.environ, RUST_LOG="warn", TOKIO_WORKER_THREADS="2")
    c.ensure_free(c.AIRLOCK_PORT)
    p = subprocess.Popen(["heaptrack", "-o", str(out), binary, "run", "-c", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c.wait_port(c.AIRLOCK_PORT)
    subprocess.run(["h2load", "--h1", f"-n{n}", "-c32", "-H", "x-api-key: bench-key", f"http://127.0.0.1:{c.AIRLOCK_PORT}/"], capture_output=True, check=True)
    # heaptrack runs the binary as its child: stop the gateway itself, then wait for heaptrack.
    subprocess.run(["pkill", "-TERM", "-f", f"^{re.escape(binary)} run -c {re.escape(str(path))}"])
    p.wait(); c.wait_port_free(c.AIRLOCK_PORT)
    data = next(Path(tmp).glob(out.name + "*"))
    text = subprocess.run(["heaptrack_print", "-f", str(data)], capture_output=True, text=True).stdout
    data.unlink()
    return int(re.search(r"calls to allocation functions: (\d+)", text).group(1))

try:
    print(f"case: {name}; heap allocations per request ({N2} - {N1} requests)")
    for b in bins:
        per_request = (allocations(b, N2) - allocations(b, N1)) / (N2 - N1)
        if per_request < 1:
            sys.exit(f"{b}: heaptrack counted no allocation per request: it allocates through mimalloc; build it with --features system-alloc")
        print(f"{Path(b).name:20s} {per_request:6.1f}")
finally:
    up.send_signal(3); up.wait()
