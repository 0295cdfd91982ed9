#!/usr/bin/env python3
"""Side-by-side load benchmark: the upstream directly, nginx as a reverse proxy, and Airlock with
several plugin chains, alternated A B A B over several rounds, medians reported.

Run by hand (not in CI):  bench/compare.py [--rounds 3] [--duration 10] [--connections 32]
                              [--h2-streams 1] [--only SUBSTRING ...] [--name SUFFIX]
Writes bench/results/<date>[-SUFFIX].md and prints the table. HTTP/1.1 cases are loaded by wrk,
the HTTP/2 cases (cleartext, prior knowledge) by h2load, each compared with nginx over the same
protocol. `--only` keeps the cases whose name contains one of the substrings (nginx is always
run: every ratio is to it). Installs nginx, wrk, h2load and redis-server (Debian packages) if
missing. Everything listens on 127.0.0.1 only.
"""

import argparse
import atexit
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_PORT = 19100
NGINX_PORT = 19200
NGINX_H2_PORT = 19201
AIRLOCK_PORT = 19300
REDIS_PORT = 19400
# Request body sizes of the body cases.
BODY_SIZES = (1024, 65536)


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def ensure_tools():
    tools = (("nginx", "nginx"), ("wrk", "wrk"), ("h2load", "nghttp2-client"), ("redis-server", "redis-server"))
    missing = [pkg for tool, pkg in tools if not shutil.which(tool)]
    if missing:
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing)


def target_dir():
    """Where cargo puts this workspace's builds."""
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def body_plugin():
    """The body-reading test plugin of the body cases, built by `build()` where the tests build it."""
    return target_dir() / "test-plugins/wasm32-wasip2/release/airlock_test_body_upper.wasm"


def build():
    """Builds the gateway, `bench/hyper_floor.rs` (the same stack without the gateway's logic) and
    the body cases' plugin (so they run on a checkout whose tests have never been built)."""
    sh("cargo", "build", "--release", "--locked", "-p", "airlock", "--bins", "--example", "hyper_floor", cwd=ROOT)
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_BUILD_TARGET")}
    sh("cargo", "build", "--release", "--target", "wasm32-wasip2", "--manifest-path", str(ROOT / "tests/plugins/Cargo.toml"),
       "-p", "airlock-test-body-upper", "--target-dir", str(target_dir() / "test-plugins"), cwd=ROOT, env=env)
    return target_dir() / "release" / "airlock"


def floor_binary(binary):
    """`bench/hyper_floor.rs`, built beside the gateway by `build()`."""
    return Path(binary).parent / "examples" / "hyper_floor"


def floor_command(binary, threads):
    """Starts the hyper floor on the gateway's port, in front of the same upstream."""
    return [str(floor_binary(binary)), f"127.0.0.1:{AIRLOCK_PORT}", f"127.0.0.1:{UPSTREAM_PORT}", str(threads)]


def wait_port(port, timeout=60):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def ensure_free(port):
    """Refuses to start a server on a port something already answers on: `wait_port` would
    then measure the stranger (a leftover nginx or gateway of an interrupted run)."""
    import socket
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"127.0.0.1:{port} is already in use (a process left by an interrupted run?); stop it first")


def find_case(substring, kinds):
    """The first case whose name contains `substring` and whose kind is one of `kinds`."""
    found = next((x for x in cases(None) if substring in x[0] and x[1] in kinds), None)
    if found is None:
        names = "\n  ".join(x[0] for x in cases(None) if x[1] in kinds)
        sys.exit(f"no case named like {substring!r}; the cases are:\n  {names}")
    return found


def wait_port_free(port, timeout=30):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


NGINX_CONF = """
worker_processes {workers};
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} {http2};
        location / {{ {body} }}
    }}
}}
"""


def start_nginx(tmp, name, port, body, workers, http2=""):
    conf = Path(tmp) / f"nginx-{name}.conf"
    ensure_free(port)
    conf.write_text(NGINX_CONF.format(workers=workers, dir=tmp, name=name, port=port, upstream=UPSTREAM_PORT, body=body, http2=http2))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def airlock_config(chain, extra=""):
    return f"""
[[listeners]]
address = "127.0.0.1:{AIRLOCK_PORT}"
[upstreams.backend]
targets = ["127.0.0.1:{UPSTREAM_PORT}"]
max_idle_connections = 128
{extra}
[[routes]]
path_prefix = "/"
upstream = "backend"
{chain}
"""


def headers_entry(i, value="1", rule="set"):
    """A `headers` entry setting one request and one response header to `value`: a literal is a
    fixed edit, made by the gateway with no call; so is a template (`${request_id}`), its value
    built by the gateway from each request. With `rule = "add"` the request header is set only if
    absent, decided by the gateway where the entry is (fixed too, since WIT 0.2.8)."""
    return f"""[[routes.plugins]]
plugin = "builtin:headers"
config = {{ request = {{ {rule} = {{ "x-bench-{i}" = "{value}" }} }}, response = {{ set = {{ "x-bench-resp-{i}" = "{value}" }} }} }}
"""


def called_entry():
    """A plugin that must be called on every request: `ip-restrict` reads the client's address and
    lets it through (the load comes from loopback). What a plugin whose work cannot be declared
    fixed costs per entry."""
    return '[[routes.plugins]]\nplugin = "builtin:ip-restrict"\nconfig = { allow = ["127.0.0.0/8"] }\n'


def cases(binary):
    c = [
        ("upstream direct", None, None),
        ("nginx proxy_pass", "nginx", None),
        # hyper server + hyper HTTP/1.1 client connections kept per worker (Airlock's Http1Pool),
        # one runtime per core, nothing else: Airlock's floor.
        ("hyper floor (bench/hyper_floor.rs)", "floor", None),
        ("airlock, no plugins", "airlock", airlock_config("")),
    ]
    typical = """[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = { limits = [{ name = "bench", rate = 100000000, per = "second", burst = 100000000 }] }
""" + headers_entry(0)
    consumers = '[[consumers]]\nid = "bench"\ncredentials = { keys = ["bench-key"] }\n'
    c.append(("airlock, key-auth + rate-limit + headers (warm)", "airlock", airlock_config(typical, consumers)))
    # The rate limit's own overhead: the same chain without it, and with its state in Redis.
    without = typical.split("[[routes.plugins]]\nplugin = \"builtin:rate-limit\"")[0] + headers_entry(0)
    c.append(("airlock, key-auth + headers (no rate-limit)", "airlock", airlock_config(without, consumers)))
    redis = f'[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{REDIS_PORT}"\n'
    c.append(("airlock, key-auth + rate-limit (Redis) + headers", "airlock", airlock_config(typical, consumers + redis)))
    strict = typical.replace('plugin = "builtin:', 'plugin = "strict-')
    defs = consumers + "".join(
        f'[plugins.strict-{n}]\nsource = "builtin:{n}"\nisolation = "request"\n' for n in ("key-auth", "rate-limit", "headers")
    )
    c.append(("same chain, isolation = request", "airlock", airlock_config(strict, defs)))
    for n in (1, 2, 4, 8):
        c.append((f"airlock, {n} x headers", "airlock", airlock_config("".join(headers_entry(i) for i in range(n)))))
    # The same chains with a value built by the gateway from each request (fixed edits with a
    # template), and with a request rule that looks at the request first (`add`, decided by the
    # gateway); then chains of a plugin that must be called, what a plugin that cannot declare its
    # work fixed costs.
    for n in (1, 8):
        chain = "".join(headers_entry(i, "${request_id}") for i in range(n))
        c.append((f"airlock, {n} x headers, per-request value (built)", "airlock", airlock_config(chain)))
    for n in (1, 8):
        chain = "".join(headers_entry(i, "${request_id}", "add") for i in range(n))
        c.append((f"airlock, {n} x headers, add if absent (fixed)", "airlock", airlock_config(chain)))
    for n in (1, 8):
        c.append((f"airlock, {n} x ip-restrict (called)", "airlock", airlock_config(called_entry() * n)))
    # Request bodies: each ratio is to nginx proxying a body of the same size (read whole before
    # it is sent on, as `proxy_request_buffering` does by default, and as a body-reading plugin
    # makes Airlock do), not to the bodyless GETs of the cases above.
    for size in BODY_SIZES:
        chain = f'[[routes.plugins]]\nplugin = "{body_plugin()}"\n'
        c.append((body_baseline(size), f"nginx-body:{size}", None))
        c.append((f"airlock, {size // 1024} KiB body, no plugins", f"body:{size}", airlock_config("")))
        c.append((f"airlock, {size // 1024} KiB body through a body-reading plugin", f"body:{size}", airlock_config(chain)))
    # HTTP/2 from the client (h2load, cleartext with prior knowledge); every upstream hop stays HTTP/1.1.
    c.append(("nginx proxy_pass, HTTP/2", "nginx-h2", None))
    c.append(("airlock, no plugins, HTTP/2", "airlock-h2", airlock_config("")))
    c.append(("airlock, key-auth + rate-limit + headers (warm), HTTP/2", "airlock-h2", airlock_config(typical, consumers)))
    return c


def is_h2(kind):
    """Whether a case's client speaks HTTP/2 (loaded by h2load, not wrk)."""
    return bool(kind) and kind.endswith("-h2")


def body_size(kind):
    """The request body size of a body case (`body:N`, `nginx-body:N`), or None."""
    return int(kind.split(":", 1)[1]) if kind and "body:" in kind else None


def body_baseline(size):
    """The nginx case that proxies request bodies of `size` bytes."""
    return f"nginx proxy_pass, {size // 1024} KiB body"


def baseline(kind):
    """The nginx case a case's ratios are to: nginx over the same client protocol, with a request
    body of the same size."""
    if body_size(kind) is not None:
        return body_baseline(body_size(kind))
    return "nginx proxy_pass, HTTP/2" if is_h2(kind) else "nginx proxy_pass"


def run_wrk(url, duration, connections, headers, body_file=None):
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if body_file:
        args += ["-s", body_file]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "errors": int(non2xx.group(1)) if non2xx else 0}


def run_h2load(url, duration, connections, streams, headers, log_file):
    """HTTP/2 load: h2load, one thread, `connections` clients with up to `streams` requests in
    flight each. Percentiles come from its per-request log (it prints only min, max and mean)."""
    # h2load appends to its log: each run starts from an empty one.
    Path(log_file).unlink(missing_ok=True)
    args = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{duration}", "--warm-up-time=1", "--log-file", log_file]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = int(re.search(r"(\d+) failed", out).group(1))
    micros = sorted(int(line.split("\t")[2]) for line in Path(log_file).read_text().splitlines() if line.count("\t") == 2)
    if not micros:
        raise RuntimeError(f"h2load answered no request:\n{out}")

    def lat(p):
        return micros[min(len(micros) - 1, len(micros) * p // 100)] / 1000

    return {"rps": rps, "p50": lat(50), "p99": lat(99), "errors": failed + int(codes.group(3)) + int(codes.group(4))}


def peak_rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="gateway worker threads and nginx workers")
    ap.add_argument("--h2-streams", type=int, default=1, help="HTTP/2 cases: requests in flight per connection")
    ap.add_argument("--only", nargs="*", default=None, help="run only cases whose name contains one of these")
    ap.add_argument("--name", default="", help="suffix of the results file")
    args = ap.parse_args()

    ensure_tools()
    binary = build()
    # Checked before anything starts, so a busy port leaves no server of this run behind.
    for port in (UPSTREAM_PORT, NGINX_PORT, NGINX_H2_PORT, AIRLOCK_PORT, REDIS_PORT):
        ensure_free(port)
    tmp = tempfile.mkdtemp(prefix="airlock-bench-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # configs, logs, load output
    upstream = start_nginx(tmp, "upstream", UPSTREAM_PORT, 'return 200 "ok";', args.threads)
    # Request bodies up to the largest case are buffered in memory, as Airlock buffers them (by
    # default nginx writes one past 16 KiB to a temporary file first).
    proxy = (
        "proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
        f"client_body_buffer_size {max(BODY_SIZES) // 1024 * 2}k;"
    )
    nginx = start_nginx(tmp, "proxy", NGINX_PORT, proxy, args.threads)
    nginx_h2 = start_nginx(tmp, "proxy-h2", NGINX_H2_PORT, proxy, args.threads, http2="http2")
    results = {}
    skipped = {}
    selected = [c for c in cases(binary) if args.only is None or any(o in c[0] for o in args.only)]
    baselines = {baseline(kind) for _, kind, _ in selected}
    all_cases = [c for c in cases(binary) if c in selected or c[0] in baselines]
    redis = None
    if any("Redis" in name for name, _, _ in all_cases):
        redis = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_port(REDIS_PORT)
    try:
        for rnd in range(args.rounds):
            for name, kind, config in all_cases:
                if name in skipped:
                    continue
                headers = ["x-api-key: bench-key"]
                proc = None
                if kind is None:
                    url = f"http://127.0.0.1:{UPSTREAM_PORT}/"
                elif kind == "nginx" or kind.startswith("nginx-body:"):
                    url = f"http://127.0.0.1:{NGINX_PORT}/"
                elif kind == "nginx-h2":
                    url = f"http://127.0.0.1:{NGINX_H2_PORT}/"
                elif kind == "floor":
                    ensure_free(AIRLOCK_PORT)
                    proc = subprocess.Popen(floor_command(binary, args.threads), stderr=subprocess.DEVNULL)
                    wait_port(AIRLOCK_PORT)
                    url = f"http://127.0.0.1:{AIRLOCK_PORT}/"
                else:
                    path = Path(tmp) / "airlock.toml"
                    path.write_text(config)
                    check = subprocess.run([str(binary), "check", "-c", str(path)], capture_output=True, text=True)
                    if check.returncode != 0:
                        skipped[name] = check.stderr.strip().splitlines()[0]
                        continue
                    env = dict(os.environ, RUST_LOG="warn", TOKIO_WORKER_THREADS=str(args.threads))
                    ensure_free(AIRLOCK_PORT)
                    proc = subprocess.Popen([str(binary), "run", "-c", str(path)], env=env, stderr=subprocess.DEVNULL)
                    wait_port(AIRLOCK_PORT)
                    url = f"http://127.0.0.1:{AIRLOCK_PORT}/"
                script = None
                size = body_size(kind)
                if size is not None:
                    script = str(Path(tmp) / f"post-{size}.lua")
                    Path(script).write_text(f'wrk.method = "POST"\nwrk.body = string.rep("a", {size})\n')
                if is_h2(kind):
                    r = run_h2load(url, args.duration, args.connections, args.h2_streams, headers, str(Path(tmp) / "h2load.tsv"))
                else:
                    run_wrk(url, 2, args.connections, headers, script)  # warm-up
                    r = run_wrk(url, args.duration, args.connections, headers, script)
                if proc:
                    r["rss"] = peak_rss_mib(proc.pid)
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
                    wait_port_free(AIRLOCK_PORT)
                results.setdefault(name, []).append(r)
                print(f"round {rnd + 1}: {name}: {r['rps']:.0f} req/s p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms", flush=True)
    finally:
        for p in (upstream, nginx, nginx_h2):
            p.send_signal(signal.SIGQUIT)
            p.wait(timeout=30)
        if redis:
            redis.terminate()
            redis.wait(timeout=30)

    def med(name, key):
        vals = [r[key] for r in results[name] if key in r]
        return statistics.median(vals) if vals else float("nan")

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    lines = [
        f"# Load benchmark, {datetime.date.today()}",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. "
        f"wrk -t1 -c{args.connections} -d{args.duration}s (HTTP/2 rows: h2load -t1 -c{args.connections} "
        f"-m{args.h2_streams} -D{args.duration}, ratios to nginx over HTTP/2), {args.rounds} rounds alternated, "
        f"medians. Gateway threads / nginx workers: {args.threads}. Upstream: nginx `return 200` over HTTP/1.1.",
        "",
        "| case | req/s | p50 ms | p99 ms | peak RSS MiB | req/s vs nginx | p99 vs nginx | non-2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, kind, _ in all_cases:
        if name in skipped:
            lines.append(f"| {name} | skipped: {skipped[name]} | | | | | | |")
            continue
        rps, p50, p99 = med(name, "rps"), med(name, "p50"), med(name, "p99")
        rss = med(name, "rss")
        errors = sum(r["errors"] for r in results[name])
        rss_s = "" if rss != rss else f"{rss:.1f}"
        nginx_rps, nginx_p99 = med(baseline(kind), "rps"), med(baseline(kind), "p99")
        lines.append(f"| {name} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {rss_s} | {rps / nginx_rps:.2f}x | {p99 / nginx_p99:.2f}x | {errors} |")
    report = "\n".join(lines) + "\n"
    suffix = f"-{args.name}" if args.name else ""
    out = ROOT / "bench" / "results" / f"{datetime.date.today()}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out}")


if __name__ == "__main__":
    sys.exit(main())
