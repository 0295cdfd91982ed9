#!/usr/bin/env python3
"""Issue 8's memory and startup figures, on the release binary:

1. peak RSS under load with every built-in plugin loaded (one route per built-in in BUILTINS,
   each with a config it accepts; wrk on the typical chain key-auth + rate-limit + headers);
2. RSS added by 10,000 idle keep-alive client connections (each sent one request, then left open),
   in cleartext and over TLS (HTTP/1.1 by ALPN, on a second listener with a self-signed certificate);
3. startup to the first served request: with a warm compile cache, and cold (an empty cache, so
   every built-in is compiled).

Run by hand:  bench/footprint.py [--connections 10000] [--binary PATH]
Prints a small table. Everything listens on 127.0.0.1 only.
"""

import argparse
import atexit
import importlib.util
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("compare", HERE / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)

PORT = compare.AIRLOCK_PORT
TLS_PORT = PORT + 1

# One route per built-in, each with a config it accepts. The last three are loaded under a
# plugin definition (GRANTED) for the grant they need; their routes are not called under load.
AUTH_SERVICE = f"http://127.0.0.1:{compare.UPSTREAM_PORT}"
BUILTINS = {
    "acl": '{ allow = ["bench"] }',
    "basic-auth": '{ realm = "bench" }',
    "cors": '{ origins = ["*"] }',
    "graphql": '{ query = "query U($id: ID!) { user(id: $id) { id } }", result = "user", variables = { id = { from = "header.x-id" } } }',
    "grpc-web": "{}",
    "headers": '{ request = { set = { "x-a" = "1" } } }',
    "http-signatures": '{ keys = [{ keyid = "k", alg = "hmac-sha256", secret = "bench-secret-bench-secret-bench-secret!" }] }',
    "ip-restrict": '{ allow = ["127.0.0.1/32"] }',
    "jwt": '{ keys = [{ kid = "k", alg = "HS256", secret = "bench-secret-bench-secret-bench-secret!" }] }',
    "key-auth": "{}",
    "proxy-cache": "{}",
    "quota": '{ quotas = { daily = { limit = 100000000, period = "day" } } }',
    "rate-limit": '{ limits = [{ name = "b", rate = 100000000, per = "second", burst = 100000000 }] }',
    "redirect": '{ port = 8443 }',
    "request-validator": '{ body_schema = { type = "object", required = ["name"] } }',
    "respond": '{ status = 200, body = "ok" }',
    "throttle": '{ rate = 100000000, per = "second", burst = 100000000, max_wait_ms = 1000 }',
    "transform": '{ request = { body = { remove = ["password"] } } }',
    "forward-auth": f'{{ url = "{AUTH_SERVICE}/verify" }}',
    "oauth2-introspection": f'{{ endpoint = "{AUTH_SERVICE}/introspect", client_id = "airlock", client_secret = "bench-secret" }}',
    "grpc-transcode": '{ descriptor = "bookstore.pb", services = ["bookstore.v1.Bookstore"], mappings = [{ method = "bookstore.v1.Bookstore/GetBook", http = "GET /grpc-transcode/{id}" }] }',
}

# The plugin definitions (capabilities and grants) of the built-ins that need one, and the
# upstream a route needs other than `backend`: the auth services are the benchmark's upstream;
# grpc-transcode reads the rest-over-grpc example's descriptor set and names an h2c upstream
# (nothing listens there: only loading is measured).
GRANTED = {
    "forward-auth": f'capabilities = ["http-client"]\nhttp_client = {{ allow = ["{AUTH_SERVICE}"] }}\n',
    "oauth2-introspection": f'capabilities = ["http-client"]\nhttp_client = {{ allow = ["{AUTH_SERVICE}"] }}\n',
    "grpc-transcode": f'capabilities = ["files"]\nfiles = {{ dir = "{compare.ROOT / "examples/rest-over-grpc/proto"}" }}\n',
}
GRPC_PORT = compare.UPSTREAM_PORT + 7


def all_builtins_config(cache_dir, tls_dir):
    definitions = "".join(f'[plugins.{name}]\nsource = "builtin:{name}"\n{grant}' for name, grant in GRANTED.items())
    routes = "".join(
        f'[[routes]]\nid = "{name}"\npath_prefix = "/{name}"\n'
        f'upstream = "{"grpc" if name == "grpc-transcode" else "backend"}"\n'
        f'[[routes.plugins]]\nplugin = "{name if name in GRANTED else "builtin:" + name}"\nconfig = {config}\n'
        for name, config in BUILTINS.items()
    )
    typical = (
        '[[routes]]\nid = "typical"\npath_prefix = "/"\nupstream = "backend"\n'
        '[[routes.plugins]]\nplugin = "builtin:key-auth"\n'
        '[[routes.plugins]]\nplugin = "builtin:rate-limit"\n'
        'config = { limits = [{ name = "bench", rate = 100000000, per = "second", burst = 100000000 }] }\n'
        + compare.headers_entry(0)
    )
    return f"""
[runtime]
cache_dir = "{cache_dir}"
[[listeners]]
address = "127.0.0.1:{PORT}"
[[listeners]]
address = "127.0.0.1:{TLS_PORT}"
[listeners.tls]
certificates = [{{ cert = "{tls_dir}/cert.pem", key = "{tls_dir}/key.pem" }}]
[upstreams.backend]
targets = ["127.0.0.1:{compare.UPSTREAM_PORT}"]
max_idle_connections = 128
[upstreams.grpc]
targets = ["127.0.0.1:{GRPC_PORT}"]
protocol = "h2c"
{definitions}[[consumers]]
id = "bench"
credentials = {{ keys = ["bench-key"] }}
{routes}{typical}"""


def status_field(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nx-api-key: bench-key\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start(binary, config_path, threads):
    env = dict(os.environ, RUST_LOG="warn", TOKIO_WORKER_THREADS=str(threads))
    compare.ensure_free(PORT)
    t0 = time.monotonic()
    proc = subprocess.Popen([str(binary), "run", "-c", str(config_path)], env=env, stderr=subprocess.DEVNULL)
    while not get_ok(PORT):
        if proc.poll() is not None:
            raise RuntimeError("the gateway exited")
        if time.monotonic() - t0 > 300:
            raise RuntimeError("the gateway never answered")
        time.sleep(0.002)
    return proc, time.monotonic() - t0


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)
    compare.wait_port_free(PORT)


def self_signed(tls_dir):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tls_dir / "key.pem"), "-out", str(tls_dir / "cert.pem"), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True)


def idle_connections(n, tls=False):
    socks = []
    request = b"GET / HTTP/1.1\r\nHost: b\r\nx-api-key: bench-key\r\n\r\n"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", TLS_PORT if tls else PORT))
        if tls:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        socks.append(s)
    return socks


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name, value):
    """A header as an HPACK literal without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


# GET / on stream 1: :method GET, :scheme http, :path / from the static table; the rest literal.
H2_REQUEST = (b"\x82\x86\x84" + hpack_literal(b":authority", b"b") + hpack_literal(b"x-api-key", b"bench-key"))


def idle_h2_connections(n):
    """`n` HTTP/2 (h2c, prior knowledge) connections, each after one request answered."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, H2_REQUEST))
        buf, done = b"", False
        while not done:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the gateway closed an HTTP/2 connection")
            buf += chunk
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                size, kind, flags, stream = int.from_bytes(buf[:3], "big"), buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                buf = buf[9 + size:]
                if kind == 4 and not flags & 0x1:
                    s.sendall(h2_frame(4, 0x1, 0))  # SETTINGS ack
                if stream == 1 and kind in (0, 1) and flags & 0x1:
                    done = True  # END_STREAM of the response
        socks.append(s)
    return socks


def idle_rss(proc, n, tls, h2=False):
    """The table row for the RSS that `n` idle keep-alive connections add to the gateway."""
    before = status_field(proc.pid, "VmRSS")
    socks = idle_h2_connections(n) if h2 else idle_connections(n, tls)
    # Idle: quiet for longer than the gateway waits before it parks a connection
    # (host/src/keepalive.rs, PARK_AFTER = 100 ms; parked within two checks).
    time.sleep(3)
    after = status_field(proc.pid, "VmRSS")
    for s in socks:
        s.close()
    kind = "HTTP/2 (h2c) connections" if h2 else "TLS connections" if tls else "connections"
    each = (after - before) * 1024 * 1024 / n
    return (f"RSS added by {n} idle keep-alive {kind}", f"{after - before:.1f} MiB ({each:.0f} B each)", "" if tls or h2 else "<= 50 MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--binary", default=None, help="default: $CARGO_TARGET_DIR or target, release/airlock")
    args = ap.parse_args()
    shipped = {d.name for d in (compare.ROOT / "plugins").iterdir() if (d / "Cargo.toml").is_file()}
    if shipped - set(BUILTINS):
        sys.exit(f"no route for built-ins {sorted(shipped - set(BUILTINS))}: add each to BUILTINS (and GRANTED if it needs a grant)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    target = Path(os.environ.get("CARGO_TARGET_DIR", compare.ROOT / "target"))
    binary = Path(args.binary) if args.binary else target / "release" / "airlock"
    tmp = Path(tempfile.mkdtemp(prefix="airlock-footprint-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # configs, logs, load output
    cache = tmp / "cache"
    config = tmp / "airlock.toml"
    self_signed(tmp)
    config.write_text(all_builtins_config(cache, tmp))
    check = subprocess.run([str(binary), "check", "-c", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"config refused:\n{check.stderr}")
    shutil.rmtree(cache, ignore_errors=True)
    upstream = compare.start_nginx(str(tmp), "upstream", compare.UPSTREAM_PORT, 'return 200 "ok";', args.threads)
    rows = []
    try:
        proc, cold = start(binary, config, args.threads)
        stop(proc)
        warm = []
        for _ in range(3):
            proc, took = start(binary, config, args.threads)
            warm.append(took)
            stop(proc)
        rows.append((f"startup to first served request, cold (empty compile cache, {len(BUILTINS)} built-ins)", f"{cold * 1000:.0f} ms", "stated"))
        rows.append(("startup to first served request, warm compile cache (median of 3)", f"{sorted(warm)[1] * 1000:.0f} ms", "<= 100 ms"))

        proc, _ = start(binary, config, args.threads)
        rss_idle = status_field(proc.pid, "VmRSS")
        compare.run_wrk(f"http://127.0.0.1:{PORT}/", args.duration, 32, ["x-api-key: bench-key"])
        peak = status_field(proc.pid, "VmHWM")
        rows.append((f"RSS after start, {len(BUILTINS)} built-ins loaded", f"{rss_idle:.1f} MiB", ""))
        rows.append((f"peak RSS under wrk -c32 -d{args.duration}s on the typical chain", f"{peak:.1f} MiB", "<= 64 MiB"))
        rows.append(idle_rss(proc, args.connections, tls=False))
        stop(proc)
        # A fresh gateway: memory the cleartext connections freed would hide what TLS ones take.
        proc, _ = start(binary, config, args.threads)
        rows.append(idle_rss(proc, args.connections, tls=True))
        stop(proc)
        proc, _ = start(binary, config, args.threads)
        rows.append(idle_rss(proc, args.connections, tls=False, h2=True))
        stop(proc)
    finally:
        upstream.send_signal(15)
        upstream.wait(timeout=30)
    print("| measure | value | target |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    sys.exit(main())
