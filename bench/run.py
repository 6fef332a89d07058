"""Load benchmark: every service as a `nameko run` process (as `make run` starts them) on a fresh
vhost and fresh databases of the local stack, driven over real HTTP by several client processes
running the operation table in bench/workload.py; the ceiling of a bare nameko echo (RPC before
and after the load, @http after), in the same run on the same machine; the database commands of
one chain pass step by step and per order over the load (each service's `ipv_db_commands_total`);
the CPU every process spent per API operation while loading, and the ceiling that puts on this
machine; the audit lag; then the invariants.

    make bench                                   # or: source var/env && .venv/bin/python -m bench.run
    make bench BENCH_ARGS="--seconds 60 --processes 4 --clients 8 --instances vouchers=2,audit=2"
    make bench BENCH_ARGS="--profile"            # py-spy flame graphs of every service into var/bench/

How it measures: each request's wall time on the client (connect to answer, keep-alive sessions);
throughput = successful requests / measuring window; percentiles by nearest rank over every
sample. Client processes share the 2 cores with the services, as they would on one machine.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from json import dumps  # Client.call's `json` argument hides the module there
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
VHOST = "ipv_bench"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(ordered, p):
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))] if ordered else float("nan")


# -- processes ---------------------------------------------------------------------------------
class Launched:
    def __init__(self, name, argv, env, port):
        self.name, self.port = name, port
        self.log = OUT / f"{name}-{port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)

    def wait_ready(self, path="/readyz", timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited at start; see {self.log}:\n" + self.log.read_text()[-2000:])
            try:
                if requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        sys.exit(f"{self.name} not ready in {timeout}s; see {self.log}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def fresh_vhost(amqp_uri):
    """A new vhost per run (queues from earlier runs would hold their backlog), when the broker is
    the local one; otherwise the URI is used as it is."""
    if not os.environ.get("IPV_LOCAL_STACK"):
        return amqp_uri
    node = os.environ.get("IPV_RABBIT_NODE", "ipv@localhost")
    env = dict(os.environ, PATH=os.environ["PATH"] + ":/usr/sbin:/usr/lib/rabbitmq/bin")
    subprocess.run(["rabbitmqctl", "-q", "-n", node, "delete_vhost", VHOST], env=env, capture_output=True)
    for argv in (["add_vhost", VHOST], ["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-q", "-n", node, *argv], env=env, check=True, capture_output=True)
    return urlsplit(amqp_uri)._replace(path="/" + VHOST).geturl()


def start_services(names, instances, amqp_uri, mongo):
    from ipvkit.deadletters import services
    launched, routes, databases = [], defaultdict(list), {}
    classes = services()
    for name in names:
        db = f"ipv_bench_{name}"
        mongo.drop_database(db)
        databases[name] = mongo[db]
        for i in range(instances.get(name, 1)):
            port = free_port()
            env = dict(os.environ, AMQP_URI=amqp_uri, PYTHONWARNINGS="ignore", LOG_LEVEL="WARNING",
                       **{f"{name.upper()}_HTTP": f"127.0.0.1:{port}", f"{name.upper()}_DB": db})
            launched.append(Launched(f"{name}{i + 1}", [str(ROOT / ".venv/bin/nameko"), "run", "--config",
                                                         f"services/{name}/config.yaml",
                                                         f"services.{name}.service:SERVICE"], env, port))
        for prefix in api_prefixes(classes[name]):
            routes[prefix].extend(f"http://127.0.0.1:{p.port}" for p in launched if p.name.rstrip("0123456789") == name)
    for p in launched:
        p.wait_ready()
    return launched, dict(routes), databases


def api_prefixes(cls):
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    from ipvkit.http import ApiHandler
    prefixes = set()
    for attr in dir(cls):
        for ext in getattr(getattr(cls, attr, None), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(ext, ApiHandler):
                prefixes.add("/".join(ext.url.split("/")[:4]))       # /api/v1/<area>
    return prefixes


# -- clients -----------------------------------------------------------------------------------
CALL_ERRORS = (urllib3.exceptions.HTTPError, OSError)   # what Client.call raises for a failed call


class Answer:
    """The parts of a requests.Response the benchmarks read, over a urllib3 response."""

    def __init__(self, raw, url):
        self.status_code, self.headers, self.content, self.url = raw.status, raw.headers, raw.data, url

    ok = property(lambda self: self.status_code < 400)
    text = property(lambda self: self.content.decode("utf-8", "replace"))

    def json(self):
        return json.loads(self.content)

    def raise_for_status(self):
        if not self.ok:
            raise requests.HTTPError(f"{self.status_code} for {self.url}: {self.text[:300]}")


class Client:
    """One client: a keep-alive connection per instance it calls, requests routed by path prefix
    (spread over a service's instances, as the ingress would). urllib3 rather than requests: the
    load processes share the two cores with the servers they measure, and a call through
    requests.Session took 2.9 ms of client CPU against urllib3's 1.35 (same server, same thread)."""

    def __init__(self, client_id, routes, signer):
        self.client_id, self.routes, self._pools = client_id, routes, {}
        self._tokens, self._signer = {}, signer

    def call(self, method, path, role, subject, json=None):
        token = self._tokens.get((role, subject))
        if token is None:
            token = self._tokens[(role, subject)] = self._signer.token(role, subject)
        base = random.choice(self.routes["/".join(path.split("/")[:4])])
        headers = {"Authorization": f"Bearer {token}"}
        body = None
        if json is not None:
            body, headers["Content-Type"] = dumps(json).encode(), "application/json"
        return Answer(self._pool(base).request(method, path, body=body, headers=headers, retries=False), base + path)

    def _pool(self, base):
        pool = self._pools.get(base)
        if pool is None:
            pool = self._pools[base] = urllib3.connection_from_url(base, maxsize=1, timeout=30)
        return pool


def drive(process_no, clients, seconds, routes, signer, shared):
    """One load process: `clients` threads running the operation table until the window ends. Its
    number keeps the ids its clients generate apart from the other processes'."""
    from bench import workload
    samples, errors, made = defaultdict(list), defaultdict(lambda: defaultdict(int)), defaultdict(list)
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def one(n):
        ctx = Client(process_no * 100 + n, routes, signer)
        ctx.shared = shared
        pools = defaultdict(list)
        table = workload.operations(shared)
        while time.monotonic() < end:
            ready = [op for op in table if op.takes is None or pools[op.takes]]
            op = random.choices(ready, weights=[o.weight for o in ready])[0]
            item = pools[op.takes].pop() if op.takes else None
            started = time.perf_counter()
            try:
                response, new = op.run(ctx, item)
                status = response.status_code
            except CALL_ERRORS as exc:
                status, new = type(exc).__name__, None
            took = time.perf_counter() - started
            with lock:
                if isinstance(status, int) and status < 300:
                    samples[op.name].append(took)
                    made[op.name].append(new)
                else:
                    errors[op.name][str(status)] += 1
            if isinstance(status, int) and status < 300 and op.gives:
                pools[op.gives].append(new)
            elif status in op.again:
                pools[op.takes].insert(0, item)   # not ready yet: others first

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(samples), {k: dict(v) for k, v in errors.items()}, dict(made)


def echo_rpc(_, amqp_uri, seconds, clients):
    from nameko.standalone.rpc import ClusterRpcProxy
    out, lock, end = [], threading.Lock(), time.monotonic() + seconds

    def one():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as proxy:
            mine = []
            while time.monotonic() < end:
                started = time.perf_counter()
                proxy.bench_echo.echo("x")
                mine.append(time.perf_counter() - started)
        with lock:
            out.extend(mine)
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def echo_http(_, url, seconds, clients):
    out, lock, end = [], threading.Lock(), time.monotonic() + seconds

    def one():
        pool, path, mine = urllib3.connection_from_url(url, maxsize=1, timeout=30), urlsplit(url).path, []
        while time.monotonic() < end:
            started = time.perf_counter()
            pool.request("GET", path, retries=False).data
            mine.append(time.perf_counter() - started)
        with lock:
            out.extend(mine)
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def db_insert(process_no, mongo_uri, seconds, clients):
    """The storage ceiling: single-document inserts (what every write does at least once)."""
    from pymongo import MongoClient
    out, lock, end = [], threading.Lock(), time.monotonic() + seconds
    collection = MongoClient(mongo_uri)["ipv_bench_ceiling"]["inserts"]

    def one(n):
        mine, i = [], 0
        while time.monotonic() < end:
            i += 1
            started = time.perf_counter()
            collection.insert_one({"_id": f"{process_no}-{n}-{i}", "outbox": [], "name": "x" * 200})
            mine.append(time.perf_counter() - started)
        with lock:
            out.extend(mine)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def start_echo(amqp_uri):
    """The bare echo service, on the benchmark's broker vhost and a free HTTP port."""
    port = free_port()
    config = OUT / "echo.yaml"
    config.write_text(f"AMQP_URI: {amqp_uri}\nWEB_SERVER_ADDRESS: 127.0.0.1:{port}\nmax_workers: 10\n")
    echo = Launched("echo", [str(ROOT / ".venv/bin/nameko"), "run", "--config", str(config),
                             "bench.echo_service:EchoService"], dict(os.environ, PYTHONWARNINGS="ignore"), port)
    echo.wait_ready(path="/echo")
    return echo


def echo_ceiling(processes, clients, amqp_uri, seconds):
    """Echo RPC round trips (each one's wall time) from `processes` x `clients` callers."""
    return [x for part in fan_out(echo_rpc, processes, amqp_uri, seconds, clients) for x in part]


def fan_out(fn, processes, *args):
    """fn(process number, *args) in each of `processes` fresh processes; their results. Spawned, not
    forked: a fork copies this process's pymongo threads' locks, and a worker could hang on one."""
    pool = get_context("spawn").Pool(processes)
    try:
        return [f.get() for f in [pool.apply_async(fn, (i,) + args) for i in range(processes)]]
    finally:
        pool.close()
        pool.join()


def audit_lag(launched, metric="ipv_audit_lag_seconds"):
    """(ledger entries, p50, p99 upper bounds in s, the share in each bucket) from the audit
    instances' own histogram `metric` (by default event occurred_at -> appended), or None without audit."""
    from prometheus_client.parser import text_string_to_metric_families
    buckets, entries, found = defaultdict(float), 0, False
    for p in launched:
        if p.name.rstrip("0123456789") != "audit":
            continue
        found = True
        text = requests.get(f"http://127.0.0.1:{p.port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{metric}_bucket":
                    buckets[float(sample.labels["le"])] += sample.value
                elif sample.name == "ipv_audit_ledger_entries":
                    entries = max(entries, sample.value)
    if not found or not buckets or not buckets[float("inf")]:
        return None
    total = buckets[float("inf")]

    def bound(q):
        return next((le for le in sorted(buckets) if buckets[le] >= q * total), float("inf"))
    shares = ", ".join(f"<= {le:g} s {buckets[le] / total:.1%}" for le in sorted(buckets) if le < float("inf"))
    return int(entries), bound(0.5), bound(0.99), shares


def cpu_seconds(launched):
    """{part: CPU seconds used so far}, from /proc: each launched service (its instances summed),
    every FerretDB and RabbitMQ (beam.smp) process on the machine, and this process's children
    that have ended (the load processes, once their pool is joined)."""
    import resource
    tick, found = os.sysconf("SC_CLK_TCK"), defaultdict(float)

    def used(pid):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick   # utime + stime
    for p in launched:
        found[p.name.rstrip("0123456789")] += used(p.proc.pid)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:   # at most 15 characters: ferretdb-v1.24.
                command = comm.read().strip()
            name = "FerretDB" if command.startswith("ferretdb") else "RabbitMQ" if command == "beam.smp" else None
            if name:
                found[name] += used(pid)
        except OSError:   # ended meanwhile
            continue
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    found["load generator"] = children.ru_utime + children.ru_stime
    return found


def machine_busy_seconds():
    """CPU seconds every process on the machine has used (all cores), from /proc/stat: what is
    not idle or waiting for I/O."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def metric_sum(launched, metric, key):
    """{key(labels): value} of one counter, summed over every service instance's `/metrics`."""
    from prometheus_client.parser import text_string_to_metric_families
    counts = defaultdict(float)
    for p in launched:
        text = requests.get(f"http://127.0.0.1:{p.port}/metrics", headers={"Accept": "text/plain"}, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric:
                    counts[key(sample.labels)] += sample.value
    return counts


def db_counts(launched):
    """{(service, kind, access): database commands so far} summed over every instance, from the
    services' own `ipv_db_commands_total` (kind read/write, access by_id/scan)."""
    return metric_sum(launched, "ipv_db_commands_total", lambda l: (l["service"], l["kind"], l["access"]))


def collection_counts(launched):
    """{(service, collection, kind): database commands so far}: where the commands go."""
    return metric_sum(launched, "ipv_db_commands_total", lambda l: (l["service"], l["collection"], l["kind"]))


def event_counts(launched):
    """{"published": events the relays handed to the broker, "consumed": deliveries the consumers
    took off their queues} so far, over every instance."""
    return dict(published=metric_sum(launched, "ipv_events_published_total", lambda l: l["outcome"])["published"],
                consumed=sum(metric_sum(launched, "ipv_events_consumed_total", lambda l: l["outcome"]).values()))


def diff(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


COUNT_COLUMNS = (("write", "by_id"), ("write", "scan"), ("read", "by_id"), ("read", "scan"))


def count_cells(counts, service, per=1):
    return "".join(f"{counts.get((service, k, a), 0) / per:>12.1f}" for k, a in COUNT_COLUMNS)


COUNT_HEADER = "".join(f"{k + ' ' + a:>12}" for k, a in COUNT_COLUMNS)


def settle(launched, quiet=1.5, limit=15):
    """Waits until no service has written for `quiet` seconds (events of a step have run their course)."""
    last, still, deadline = None, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        writes = {k: v for k, v in db_counts(launched).items() if k[1] == "write"}
        if writes != last:
            last, still = writes, time.monotonic()
        elif time.monotonic() - still >= quiet:
            return
        time.sleep(0.25)


def chain_steps(ctx, launched, names, made):
    """One pass of the chain by one client, each step alone: the database commands it caused in
    every service (its events included), and the idle background (timers) for comparison. What
    it makes goes into `made` (the invariants count it)."""
    from bench import workload
    lines = [f"{'step / service':<26}{COUNT_HEADER}"]
    before = db_counts(launched)
    time.sleep(5)
    idle = diff(db_counts(launched), before)
    for name in names:
        lines.append(f"{'idle 5 s: ' + name:<26}{count_cells(idle, name)}")
    pools = defaultdict(list)
    for op in workload.operations(ctx.shared):
        settle(launched)
        before = db_counts(launched)
        item = pools[op.takes].pop() if op.takes else None
        for _ in range(40):
            response, new = op.run(ctx, item)
            if response.status_code not in op.again:
                break
            time.sleep(0.25)
        response.raise_for_status()
        made[op.name].append(new)
        if op.gives:
            pools[op.gives].append(new)
        settle(launched)
        step = diff(db_counts(launched), before)
        for name in names:
            if any(k[0] == name for k in step):
                lines.append(f"{op.name + ': ' + name:<26}{count_cells(step, name)}")
    return lines


# -- report ------------------------------------------------------------------------------------
def row(label, samples, seconds, errors=None):
    ordered = sorted(samples)
    bad = sum((errors or {}).values())
    return (f"{label:<22}{len(ordered):>8}{len(ordered) / seconds:>9.1f}{percentile(ordered, 50) * 1000:>9.1f}"
            f"{percentile(ordered, 95) * 1000:>9.1f}{percentile(ordered, 99) * 1000:>9.1f}  "
            + (", ".join(f"{k}: {v}" for k, v in sorted((errors or {}).items())) if bad else "0"))


def budget(operations, refused, cpu, busy, seconds, events, commands, target=350):
    """Where the machine's CPU went per API operation while the load ran, and what that allows: the
    chain's ceiling on this machine is its cores over the CPU one operation costs. Returns the
    report's lines and its figures."""
    per = max(operations, 1)
    figures = {"cpu_ms_per_operation": {part: used / per * 1000 for part, used in cpu.items()},
               "machine_ms_per_operation": busy / per * 1000, "cores_busy": busy / seconds,
               "http_requests_per_operation": (operations + refused) / per,
               "db_commands_per_operation": sum(commands.values()) / per,
               "ferretdb_us_per_command": cpu.get("FerretDB", 0) / max(sum(commands.values()), 1) * 1e6,
               "events_published_per_operation": events.get("published", 0) / per,
               "deliveries_per_operation": events.get("consumed", 0) / per}
    cores, machine = os.cpu_count(), figures["machine_ms_per_operation"]
    text = (f"CPU per API operation while loading ({seconds:.0f} s, from /proc): "
            + ", ".join(f"{part} {ms:.2f} ms" for part, ms in
                        sorted(figures["cpu_ms_per_operation"].items(), key=lambda kv: -kv[1]))
            + f"; ours {sum(figures['cpu_ms_per_operation'].values()):.2f} ms, the whole machine {machine:.2f} ms "
            f"({figures['cores_busy']:.2f} of {cores} cores busy)\n"
            f"per API operation: {figures['http_requests_per_operation']:.2f} HTTP requests (refused ones included), "
            f"{figures['db_commands_per_operation']:.1f} database commands (FerretDB "
            f"{figures['ferretdb_us_per_command']:.0f} µs of CPU each), {figures['events_published_per_operation']:.2f} "
            f"events published, {figures['deliveries_per_operation']:.2f} deliveries consumed\n"
            f"so {cores} cores allow about {cores * 1000 / machine:.0f} API operations/s of this mix; {target}/s "
            f"would need {cores * 1000 / target:.1f} ms of machine per operation")
    return text, figures


HEADER = f"{'operation':<22}{'ok':>8}{'per s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  errors"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="measuring window of the API load")
    parser.add_argument("--processes", type=int, default=4, help="load-generating processes")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per process")
    parser.add_argument("--services", default=None, help="comma list; default: every service found")
    parser.add_argument("--instances", default="", help="e.g. vouchers=2,audit=2 (competing consumers)")
    parser.add_argument("--echo-seconds", type=float, default=10)
    parser.add_argument("--profile", action="store_true", help="py-spy record every service during the load")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--no-steps", action="store_true",
                        help="skip the one-pass count of database commands per chain step")
    parser.add_argument("--private-stack", action="store_true",
                        help="own RabbitMQ node and FerretDB for this run (tests/faults/harness.py), so other "
                             "work on the shared servers does not skew the figures")
    args = parser.parse_args(argv)

    from pymongo import MongoClient

    from bench import workload
    from ipvkit.deadletters import services
    OUT.mkdir(parents=True, exist_ok=True)
    # The services trust an issuer of the benchmark's own (by its public keys, as they trust the realm),
    # so the clients mint tokens for any number of people without Keycloak in the measurement.
    from tests.issuer import LocalIssuer
    issuer = LocalIssuer().start()
    os.environ.update(issuer.config)
    signer = issuer.signer()
    stack = None
    if args.private_stack:
        from tests.faults.harness import PrivateStack
        stack = PrivateStack.start()
        os.environ.update(AMQP_URI=stack.amqp_uri, MONGO_URI=stack.mongo_uri, IPV_RABBIT_NODE=stack.node,
                          **stack.s3_settings())
    amqp_uri = fresh_vhost(os.environ["AMQP_URI"])
    mongo = MongoClient(os.environ["MONGO_URI"])
    names = args.services.split(",") if args.services else sorted(services())
    instances = {k: int(v) for k, v in (p.split("=") for p in args.instances.split(",") if p)}
    launched, echo = [], None
    try:
        launched, routes, databases = start_services(names, instances, amqp_uri, mongo)
        print(f"services: {', '.join(f'{n} x{instances.get(n, 1)}' for n in names)}; broker vhost {VHOST}; "
              f"load: {args.processes} processes x {args.clients} clients for {args.seconds:.0f} s", flush=True)
        # The ceiling is measured before and after the load (others' work on the machine varies).
        echo = start_echo(amqp_uri)
        rpc_before = echo_ceiling(args.processes, args.clients, amqp_uri, args.echo_seconds)
        shared = workload.setup(Client(0, routes, signer), names)
        time.sleep(2)   # what set-up registered reaches the other services' read models as events
        steps, stepped = [], defaultdict(list)
        if not args.no_steps:
            stepper = Client(999, routes, signer)   # an id no load client has
            stepper.shared = shared
            steps = chain_steps(stepper, launched, names, stepped)
        counted, by_collection = db_counts(launched), collection_counts(launched)
        profilers = []
        if args.profile:
            profilers = [subprocess.Popen([str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(p.proc.pid),
                                           "--duration", str(int(args.seconds)), "--output",
                                           str(OUT / f"profile-{p.name}.svg")], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL) for p in launched]
        cpu_before, busy_before, events_before = cpu_seconds(launched), machine_busy_seconds(), event_counts(launched)
        db_before, loaded = db_counts(launched), time.monotonic()
        results = fan_out(drive, args.processes, args.clients, args.seconds, routes, signer, shared)
        loaded = time.monotonic() - loaded   # the window, and the load processes' start and end
        cpu, busy = diff(cpu_seconds(launched), cpu_before), machine_busy_seconds() - busy_before
        events, db_loaded = diff(event_counts(launched), events_before), diff(db_counts(launched), db_before)
        window = args.seconds   # each process measures its own window of this length
        for prof in profilers:
            prof.wait()
        samples, errors, made = defaultdict(list), defaultdict(lambda: defaultdict(int)), defaultdict(list, stepped)
        for s, e, m in results:
            for k, v in s.items():
                samples[k].extend(v)
            for k, v in e.items():
                for code, n in v.items():
                    errors[k][code] += n
            for k, v in m.items():
                made[k].extend(v)

        # The ceiling, measured now, on the same machine, with the services idle.
        rpc = echo_ceiling(args.processes, args.clients, amqp_uri, args.echo_seconds)
        http = [x for part in fan_out(echo_http, args.processes, f"http://127.0.0.1:{echo.port}/echo",
                                      args.echo_seconds, args.clients) for x in part]
        mongo.drop_database("ipv_bench_ceiling")
        inserts = [x for part in fan_out(db_insert, args.processes, os.environ["MONGO_URI"], args.echo_seconds,
                                         args.clients) for x in part]
        mongo.drop_database("ipv_bench_ceiling")

        # Two relay leases: an event whose flush failed under load waits out its lease, then the sweep sends it.
        deadline = time.monotonic() + 60
        while (pending := workload.pending_outbox(databases)) and time.monotonic() < deadline:
            time.sleep(0.5)
        deadline = time.monotonic() + 120   # the read models, so their lag counts every entry
        while (unprojected := workload.unprojected(databases)) and time.monotonic() < deadline:
            time.sleep(0.5)
        per_order = diff(db_counts(launched), counted)
        per_collection = diff(collection_counts(launched), by_collection)
        checker = Client(0, routes, signer)
        checker.shared = shared
        problems = workload.check(checker, made, databases)
        if pending:
            problems.append(f"{pending} documents still hold unpublished events after 60 s")
        if unprojected:
            problems.append(f"{unprojected} ledger entries still not applied to the audit read models after 120 s")

        print(HEADER)
        total = []
        for op in workload.OPERATIONS:
            if op.name in samples or op.name in errors:
                print(row(op.name, samples.get(op.name, []), window, errors.get(op.name)))
                total.extend(samples.get(op.name, []))
        print(row("all API operations", total, window, {k: sum(v.values()) for k, v in errors.items()}))
        print(row("echo RPC before load", rpc_before, args.echo_seconds))
        print(row("echo RPC after (ceil.)", rpc, args.echo_seconds))
        print(row("echo @http (ceiling)", http, args.echo_seconds))
        print(row("database insert", inserts, args.echo_seconds))
        api_rate, http_rate = len(total) / window, len(http) / args.echo_seconds
        rpc_rate = (len(rpc_before) + len(rpc)) / 2 / args.echo_seconds   # the mean of before and after
        print(f"ratio: API operations/s = {api_rate / rpc_rate:.2f} x echo RPC/s (mean of before and after), "
              f"{api_rate / http_rate:.2f} x echo "
              f"@http/s, {api_rate / (len(inserts) / args.echo_seconds):.2f} x database inserts/s")
        lag = audit_lag(launched)
        if lag:
            print(f"audit: {lag[0]} ledger entries; lag (occurred_at -> appended) p50 <= {lag[1]} s, "
                  f"p99 <= {lag[2]} s (bucket bounds of ipv_audit_lag_seconds; {lag[3]})")
        projected = audit_lag(launched, "ipv_audit_projection_lag_seconds")
        if projected:
            print(f"audit read models (red flags, reports): appended -> applied p50 <= {projected[1]} s, "
                  f"p99 <= {projected[2]} s (ipv_audit_projection_lag_seconds; {projected[3]})")
        orders = len(samples.get("order", ()))
        if orders:
            print(f"database commands per order placed (the whole mix over the window and the drain, "
                  f"{orders} orders):\n{'service':<26}{COUNT_HEADER}")
            for name in names:
                print(f"{name:<26}{count_cells(per_order, name, orders)}")
            print(f"{'all services':<26}" + "".join(
                f"{sum(v for (_, k, a), v in per_order.items() if (k, a) == c) / orders:>12.1f}" for c in COUNT_COLUMNS))
            top = sorted(per_collection.items(), key=lambda kv: -kv[1])[:10]
            print("the ten largest, by collection: " + ", ".join(
                f"{service}.{collection} {kind}s {n / orders:.1f}" for (service, collection, kind), n in top))
        spent, spent_figures = budget(len(total), sum(sum(v.values()) for v in errors.values()), cpu, busy,
                                      loaded, events, db_loaded)
        print(spent)
        if steps:
            print("database commands of one chain pass, step by step (one client, each step settled):")
            print("\n".join(steps))
        print("invariants: " + ("hold" if not problems else "BROKEN: " + "; ".join(problems)))
        if args.profile:
            print(f"profiles: {', '.join(str(OUT / f'profile-{p.name}.svg') for p in launched)}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "window_s": window, "operations": {k: {"ok": len(v), "per_s": len(v) / window,
                                                       "p50": percentile(sorted(v), 50),
                                                       "p99": percentile(sorted(v), 99)} for k, v in samples.items()},
                "errors": errors, "echo_rpc_per_s": rpc_rate, "echo_http_per_s": http_rate,
                "db_inserts_per_s": len(inserts) / args.echo_seconds, "problems": problems,
                "db_commands_per_order": {"/".join(k): v / max(orders, 1) for k, v in per_order.items()},
                "audit_lag_s": lag and {"p50": lag[1], "p99": lag[2]},
                "audit_projection_lag_s": projected and {"p50": projected[1], "p99": projected[2]}, **spent_figures},
                indent=2))
        return 1 if problems else 0
    finally:
        for p in launched + ([echo] if echo else []):
            p.stop()
        issuer.stop()
        if stack:
            stack.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
