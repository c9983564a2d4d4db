#!/usr/bin/env python3
"""Measurements of bench/fleet.sh, against etcd (its JSON gateway) and Redis (RESP on a
socket), with no client library: the time from one key write to the new route being served
by every instance, and the time to first serve and memory of an instance started on 10,000
keys. Prints one JSON object per command on stdout.

  fleet_probe.py backend PORT                     serve 200 "ok" on 127.0.0.1:PORT (foreground)
  fleet_probe.py load STORE ADDR ROUTERS BACKEND  write ~10 keys per router (with its service)
  fleet_probe.py latency STORE ADDR WRITES PORTS BACKEND   write→served on every port in PORTS
  fleet_probe.py startup PORT HOST TIMEOUT -- CMD...       start CMD, wait for HOST on PORT
"""

import base64
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = "traefik"


class Redis:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def reply(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return rest
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError("unexpected reply %r" % line)

    def put_many(self, pairs):
        for i in range(0, len(pairs), 500):
            args = ["MSET"]
            for k, v in pairs[i : i + 500]:
                args += [k, v]
            self.command(*args)


class Etcd:
    def __init__(self, addr):
        self.conn = http.client.HTTPConnection(addr)

    def put(self, key, value):
        body = json.dumps(
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(),
            }
        )
        self.conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
        answer = self.conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError("etcd put %s: %d" % (key, answer.status))

    def put_many(self, pairs):
        for k, v in pairs:
            self.put(k, v)


def store(kind, addr):
    return Etcd(addr) if kind == "etcd" else Redis(addr)


def route_keys(name, host, backend, servers=1):
    keys = [
        ("%s/http/services/%s/loadBalancer/servers/%d/url" % (ROOT, name, i), backend)
        for i in range(servers)
    ]
    keys += [
        ("%s/http/routers/%s/service" % (ROOT, name), name),
        ("%s/http/routers/%s/rule" % (ROOT, name), "Host(`%s`)" % host),
    ]
    return keys


def load(kind, addr, routers, backend):
    """~10 keys per router: 4 for the router, 6 for its service."""
    pairs = []
    for i in range(routers):
        name = "r%d" % i
        pairs += route_keys(name, "%s.test" % name, backend, servers=5)
        pairs += [
            ("%s/http/routers/%s/entryPoints/0" % (ROOT, name), "web"),
            ("%s/http/routers/%s/priority" % (ROOT, name), str(100 + i)),
            ("%s/http/services/%s/loadBalancer/passHostHeader" % (ROOT, name), "true"),
        ]
    start = time.monotonic()
    store(kind, addr).put_many(pairs)
    print(json.dumps({"keys": len(pairs), "write_seconds": round(time.monotonic() - start, 3)}))


class Poller:
    """A keep-alive connection to one instance."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def status(self, host):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                self.conn.request("GET", "/", headers={"Host": host})
                answer = self.conn.getresponse()
                answer.read()
                return answer.status
            except (OSError, http.client.HTTPException):
                self.conn = None
        return 0


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency(kind, addr, writes, ports, backend):
    s = store(kind, addr)
    pollers = [Poller(int(p)) for p in ports.split(",")]
    # One router whose rule each write changes: one key per write.
    s.put_many(route_keys("probe", "v0.test", backend))
    for p in pollers:
        wait_for(p, "v0.test", 60)
    time.sleep(0.25)
    samples = []
    for i in range(1, writes + 1):
        host = "v%d.test" % i
        start = time.monotonic()
        s.put_many([("%s/http/routers/probe/rule" % ROOT, "Host(`%s`)" % host)])
        pending = list(pollers)
        while pending:
            pending = [p for p in pending if p.status(host) != 200]
            if pending:
                if time.monotonic() - start > 30:
                    raise RuntimeError("%s not served within 30 s" % host)
                time.sleep(0.0005)
        samples.append((time.monotonic() - start) * 1000)
        # Past every instance's throttle (bench configs: 100 ms), so writes do not queue.
        time.sleep(0.25)
    print(
        json.dumps(
            {
                "writes": writes,
                "median_ms": round(statistics.median(samples), 1),
                "p99_ms": round(percentile(samples, 99), 1),
                "max_ms": round(max(samples), 1),
                "min_ms": round(min(samples), 1),
            }
        )
    )


def wait_for(poller, host, timeout):
    start = time.monotonic()
    while poller.status(host) != 200:
        if time.monotonic() - start > timeout:
            raise RuntimeError("%s not served on %d within %d s" % (host, poller.port, timeout))
        time.sleep(0.005)
    return time.monotonic() - start


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def startup(port, host, timeout, cmd):
    log = open(os.environ.get("PROBE_LOG", os.devnull), "wb")
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = wait_for(Poller(port), host, timeout)
        time.sleep(2)
        print(
            json.dumps(
                {
                    "first_serve_seconds": round(first, 3),
                    "rss_mib": round(rss_kib(child.pid) / 1024, 1),
                }
            )
        )
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def backend(port):
    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Ok).serve_forever()


def main(argv):
    command = argv[1]
    if command == "backend":
        backend(int(argv[2]))
    elif command == "load":
        load(argv[2], argv[3], int(argv[4]), argv[5])
    elif command == "latency":
        latency(argv[2], argv[3], int(argv[4]), argv[5], argv[6])
    elif command == "startup":
        sep = argv.index("--")
        startup(int(argv[2]), argv[3], float(argv[4]), argv[sep + 1 :])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
