#!/usr/bin/env python3
"""Gateway CPU time (user + sys, from /proc) per request: less sensitive to a busy machine than
req/s. For each binary given, alternated over rounds: start it with one of compare.py's configs
(nginx `return 200` upstream), warm up, send N keep-alive requests with h2load (-c32, HTTP/1.1)
and divide the CPU time the gateway used by the requests answered. It counts what
instructions miss (cache lines the cores pass back and forth, the kernel's share);
`instructions_per_request.py` counts instructions (to about 1%), in a build callgrind can run.

Run by hand:  ROUNDS=3 N=40000 bench/cpu_per_request.py "no plugins" BINARY [BINARY ...]
"hyper floor" as the case measures `bench/hyper_floor.rs` built beside each BINARY instead.
LOG=info measures at another log level (default warn, as compare.py runs); WORKERS=1 sets
`runtime.worker_threads` (default: one per core). UPSTREAM_H2=1 makes the upstream hop HTTP/2
(nginx serving h2c, the upstream `protocol = "h2c"`), as to a gRPC server.
"""
import sys, os, subprocess, signal, statistics, tempfile, importlib.util, re, atexit, shutil
from pathlib import Path
spec = importlib.util.spec_from_file_location("compare", Path(__file__).resolve().parent / "compare.py"); c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
case = sys.argv[1]; bins = sys.argv[2:]; rounds = int(os.environ.get("ROUNDS", "3")); N = int(os.environ.get("N", "40000"))
name, kind, config = c.find_case(case, ("airlock", "floor"))
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # configs, logs, load output
h2_upstream = os.environ.get("UPSTREAM_H2") == "1"
# Over h2c; nginx's default of 1,000 requests a connection raised, so no GOAWAY falls in the count.
up = c.start_nginx(tmp, "upstream", c.UPSTREAM_PORT, 'return 200 "ok";', 2, "http2; http2_max_requests 100000000" if h2_upstream else "")
if h2_upstream and config:
    config = config.replace("[upstreams.backend]\n", '[upstreams.backend]\nprotocol = "h2c"\n')
log = os.environ.get("LOG", "warn")
if "WORKERS" in os.environ:
    config = f"[runtime]\nworker_threads = {int(os.environ['WORKERS'])}\n" + (config or "")
path = Path(tmp) / "a.toml"; path.write_text(config or "")
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def load(n):
    out = subprocess.run(["h2load", "--h1", f"-n{n}", "-c32", "-H", "x-api-key: bench-key", f"http://127.0.0.1:{c.AIRLOCK_PORT}/"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"(\d+) succeeded", out).group(1))
res = {}
try:
    for r in range(rounds):
        for b in bins:
            env = dict(os.environ, RUST_LOG=log)
            # The hyper floor case runs `bench/hyper_floor.rs` built beside each binary given.
            cmd = c.floor_command(b, int(os.environ.get("WORKERS", os.cpu_count()))) if kind == "floor" else [b, "run", "-c", str(path)]
            c.ensure_free(c.AIRLOCK_PORT)
            p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL); c.wait_port(c.AIRLOCK_PORT)
            load(2000)
            t0 = cpu(p.pid); ok = load(N); t1 = cpu(p.pid)
            p.send_signal(signal.SIGTERM); p.wait(); c.wait_port_free(c.AIRLOCK_PORT)
            res.setdefault(b, []).append((t1 - t0) / ok * 1e6)
finally:
    up.send_signal(3); up.wait()
print(f"case: {name}{' (h2c upstream)' if h2_upstream else ''}; log level {log}; gateway CPU time (user+sys) per request, {N} requests x {rounds} rounds")
for k, v in res.items():
    print(f"{Path(k).name:20s} {statistics.median(v):6.1f} us/request  runs {[round(x,1) for x in v]}")
