"""A private stack to break things in: its own RabbitMQ node (or cluster of three: `PrivateStack.start(nodes=3)`)
and FerretDB (other ports, its own
var dir, started by scripts/stack.sh), services as real `nameko run` processes, a tap queue on a
producer's exchange, and helpers to kill -9 a service and restart either server. Nothing here
touches the shared servers other tests use.

    stack = PrivateStack.start()
    svc = ServiceProcess(stack, "enterprises").start()
    ...; svc.kill9(); svc.start(); stack.restart_rabbit(); stack.restart_ferret()
    stack.stop()
    cluster = PrivateStack.start(nodes=3); cluster.kill9_node(cluster.busiest_leader()); cluster.start_rabbit()
"""
import atexit
import json
from collections import Counter
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
from kombu import Connection, Queue

from ipvkit.amqp import QUORUM, events_exchange
from tests.issuer import LocalIssuer

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
# The shared stack's settings must not leak into the private one (stack.sh would treat it as external).
# Keycloak is the exception: the private stack's services trust the tests' own issuer, so the shared
# Keycloak (KEYCLOAK_URL) stays someone else's server to stack.sh, not one it would import a realm into
# with the private var dir's (absent) admin password. The private stack runs its own S3 gateway.
SHARED_VARS = ("AMQP_URI", "MONGO_URI", "TEST_AMQP_URI", "IPV_LOCAL_STACK", "IPV_VAR", "IPV_AMQP_PORT",
               "IPV_RABBIT_DIST_PORT", "IPV_MONGO_PORT", "IPV_RABBIT_NODE", "IPV_RABBIT_NODES", "IPV_AMQP_PORTS",
               "IPV_RABBIT_DIST_PORTS", "IPV_LOCAL_KEYCLOAK", "IPV_LOCAL_S3",
               "IPV_S3_PORT", "S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "IPV_S3_DATA_DIR")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what, check, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not true within {timeout}s")
        time.sleep(interval)


class PrivateStack:
    def __init__(self, nodes=1):
        self.id = uuid.uuid4().hex[:8]
        self.var = ROOT / "var" / "faults" / self.id   # reachable by the rabbitmq user, unlike /tmp dirs
        self.amqp_port, self.dist_port, self.mongo_port, self.s3_port = free_port(), free_port(), free_port(), free_port()
        self.node = f"ipvfault{self.id}@localhost"
        self.env = {k: v for k, v in os.environ.items() if k not in SHARED_VARS}
        self.env.update(IPV_VAR=str(self.var), IPV_AMQP_PORT=str(self.amqp_port),
                        IPV_RABBIT_DIST_PORT=str(self.dist_port), IPV_MONGO_PORT=str(self.mongo_port),
                        IPV_S3_PORT=str(self.s3_port),
                        IPV_RABBIT_NODE=self.node, PATH=os.environ["PATH"] + ":/usr/sbin:/usr/lib/rabbitmq/bin")
        self.amqp_uri = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"
        self.mongo_uri = f"mongodb://127.0.0.1:{self.mongo_port}/"
        self.nodes = {self.node: self.amqp_port}
        if nodes > 1:
            # stack.sh's cluster: node i is ipvfault<id>-i@localhost on the i-th of these ports.
            amqp, dist = [free_port() for _ in range(nodes)], [free_port() for _ in range(nodes)]
            self.env.update(IPV_RABBIT_NODES=str(nodes), IPV_AMQP_PORTS=" ".join(map(str, amqp)),
                            IPV_RABBIT_DIST_PORTS=" ".join(map(str, dist)))
            self.nodes = {f"ipvfault{self.id}-{i + 1}@localhost": port for i, port in enumerate(amqp)}
            # Every node, as services get it (kombu fails over to the next one).
            self.amqp_uri = ";".join(f"amqp://guest:guest@127.0.0.1:{port}/" for port in amqp)

    @classmethod
    def start(cls, nodes=1):
        stack = cls(nodes)
        stack.var.mkdir(parents=True)
        stack._script("start")
        return stack

    def _script(self, command):
        done = subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), command], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"stack.sh {command} failed:\n{done.stdout}\n{done.stderr}")

    def s3_settings(self):
        """The private stack's own S3 gateway, for the documents service."""
        access, secret = (self.var / "s3" / "credentials").read_text().split()
        return {"S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}", "S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}

    def restart_rabbit(self):
        """A clean stop and start of the node (`rabbitmqctl stop`), as an upgrade or a reschedule does."""
        subprocess.run(["rabbitmqctl", "-q", "-n", self.node, "stop"], env=self.env, check=True, timeout=60,
                       capture_output=True)
        self._script("start")   # starts only what is down

    def restart_ferret(self):
        """kill -9 FerretDB, then start it on the same data."""
        pid = int((self.var / "ferretdb" / "ferretdb.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until("FerretDB gone", lambda: not _alive(pid), 10)
        self._script("start")

    def stop(self):
        self._script("stop")
        shutil.rmtree(self.var, ignore_errors=True)

    # -- the cluster ------------------------------------------------------------------------------
    def rabbitmqctl(self, *args, node=None, timeout=60):
        """rabbitmqctl against `node`, or against the first node that answers."""
        for name in [node] if node else self.nodes:
            done = subprocess.run(["rabbitmqctl", "-q", "-n", name, *args], env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
            if done.returncode == 0:
                return done.stdout
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed on {node or list(self.nodes)}: {done.stderr}")

    def leaders(self):
        """{quorum queue: the node that leads it}."""
        rows = json.loads(self.rabbitmqctl("list_queues", "-p", "/", "name", "leader", "--formatter", "json"))
        return {row["name"]: row["leader"] for row in rows if row.get("leader") not in (None, "", "undefined")}

    def busiest_leader(self, prefixes=("audit.", "vouchers.", "rpc-vouchers")):
        """The node that leads most of the queues the money workload keeps busy."""
        led = Counter(leader for name, leader in self.leaders().items() if name.startswith(prefixes))
        assert led, f"no queue of {prefixes} has a leader: {self.leaders()}"
        return led.most_common(1)[0][0]

    def kill9_node(self, name):
        """kill -9 the node's Erlang VM: no goodbye to its peers or its clients."""
        pid = int(self.rabbitmqctl("eval", "os:getpid().", node=name).strip().strip('"'))
        os.kill(pid, signal.SIGKILL)
        wait_until(f"{name} gone", lambda: not _alive(pid), 10)
        return pid

    def start_rabbit(self):
        """Starts the nodes that are down (and waits until all are running in one cluster)."""
        self._script("start")

    def stop_cluster(self):
        """Every node stopped cleanly, one after the other, as a maintenance window does."""
        for name in self.nodes:
            self.rabbitmqctl("stop", node=name)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until reaped; a zombie is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


_issuer = []


def issuer():
    """One token issuer of the tests' own for every service process of this run (they trust its public
    keys, as they would the realm's); the workload processes sign with it."""
    if not _issuer:
        _issuer.append(LocalIssuer().start())
        atexit.register(_issuer[0].stop)
    return _issuer[0]


class ServiceProcess:
    """One service as `nameko run` runs it (scripts/services.sh), on the private stack."""

    def __init__(self, stack, name, db=None, env=None):
        self.stack, self.name, self.extra_env = stack, name, env or {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = db or f"faults_{name}_{uuid.uuid4().hex[:8]}"
        self.log = stack.var / f"{name}-{self.port}.log"
        self.proc = None

    def start(self, ready_within=30):
        upper = self.name.upper()
        env = dict(self.stack.env, AMQP_URI=self.stack.amqp_uri, MONGO_URI=self.stack.mongo_uri,
                   **issuer().config, PYTHONWARNINGS="ignore", **self.stack.s3_settings(),
                   **{f"{upper}_HTTP": f"127.0.0.1:{self.port}", f"{upper}_DB": self.db}, **self.extra_env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "nameko"), "run", "--config", f"services/{self.name}/config.yaml",
                 f"services.{self.name}.service:SERVICE"], cwd=ROOT, env=env, stdout=log, stderr=log,
                start_new_session=True)
        wait_until(f"{self.name} ready", self.ready, ready_within)
        return self

    @property
    def signer(self):
        return issuer().signer()

    def ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited; see {self.log}")
        return requests.get(self.base + "/readyz", timeout=2).status_code == 200

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


class Tap:
    """A durable queue on a producer's exchange, declared before the service starts, so it keeps
    every event published through broker restarts."""

    def __init__(self, amqp_uri, producer, pattern="#"):
        self.amqp_uri = amqp_uri
        # A quorum queue, like the services' own: on a cluster it outlives the node it was declared on.
        self.queue = Queue(f"faults.tap.{uuid.uuid4().hex[:8]}", exchange=events_exchange(producer),
                           routing_key=pattern, durable=True, queue_arguments=dict(QUORUM))
        with Connection(amqp_uri) as conn:
            self.queue(conn.default_channel).declare()

    def drain(self):
        got = []
        with Connection(self.amqp_uri) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(self.queue.name, no_ack=True)) is not None:
                got.append(json.loads(message.body))
            channel.close()
        return got


# The workload drivers run until the test has seen what it needs (a count of acknowledged writes or
# completed chains, see `wait_for`) and touches their stop file; this only bounds a run whose test died.
SAFETY_CAP_S = 900


class Workload:
    """The workload driver (tests/faults/workload.py) in its own process, so it keeps sending while
    this process restarts servers."""

    def __init__(self, service, clients=4, kind="register", at_most=SAFETY_CAP_S):
        name = f"workload-{uuid.uuid4().hex[:6]}"
        self.out, self.stop_file = service.stack.var / f"{name}.jsonl", service.stack.var / f"{name}.stop"
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.faults.workload", kind, service.base, str(self.out), "--seconds", str(at_most),
             "--clients", str(clients), "--stop-file", str(self.stop_file)],
            cwd=ROOT, env=dict(os.environ, **service.signer.to_env()))

    def so_far(self):
        """Every outcome written so far (the driver is still running)."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(self, what, enough, timeout=240):
        """Until `enough(outcomes so far)`: a slow machine makes this slower, not red; the generous
        `timeout` only catches a system that stopped making progress."""
        try:
            wait_until(what, lambda: enough(self.so_far()), timeout, interval=0.5)
        except TimeoutError:
            outcomes = self.so_far()
            raise AssertionError(f"{what}: not reached within {timeout} s; {len(outcomes)} requests, "
                                 f"{sum(r['status'] in (200, 201) for r in outcomes)} acknowledged, the last ones: "
                                 f"{outcomes[-3:]}") from None

    def wait_for_success_after(self, moment, timeout=120):
        """Until a write issued after `moment` succeeded: the system is serving again."""
        self.wait_for("a write issued after recovery succeeded", lambda outcomes: any(
            r["issued"] > moment and r["status"] in (200, 201) for r in outcomes), timeout)

    def results(self, timeout=60):
        """Stops issuing new writes, waits for the ones in flight, returns every outcome."""
        self.stop_file.touch()
        assert self.proc.wait(timeout) == 0, "the workload driver failed"
        return [json.loads(line) for line in self.out.read_text().splitlines()]


class MoneyWorkload(Workload):
    """tests/faults/money_workload.py in its own process: each client walks its enterprises
    through apply, order, deliver, confirm, claim, approve, pay (`plan`: see that module)."""

    def __init__(self, service, plan, at_most=SAFETY_CAP_S):
        name = f"money-{uuid.uuid4().hex[:6]}"
        self.out, self.stop_file = service.stack.var / f"{name}.jsonl", service.stack.var / f"{name}.stop"
        plan_file = service.stack.var / f"{name}.plan.json"
        plan_file.write_text(json.dumps(dict(plan, base=service.base)))
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.faults.money_workload", str(plan_file), str(self.out), "--seconds", str(at_most),
             "--stop-file", str(self.stop_file)], cwd=ROOT, env=dict(os.environ, **service.signer.to_env()))


def registration_problems(results, docs, tapped):
    """Every acknowledged registration is stored; every stored one had its event published, under
    one event id (a redelivery after a crash repeats that id, which consumers skip); no event for
    anything not stored; no event left in an outbox. Returns (problems, figures)."""
    acked = {r["id"] for r in results if r["status"] in (200, 201)}
    stored = {doc["_id"] for doc in docs}
    stuck = sorted(doc["_id"] for doc in docs if doc.get("outbox"))
    ids, messages = {}, 0
    for event in tapped:
        if event["type"] == "enterprise.registered":
            ids.setdefault(event["aggregate_id"], set()).add(event["event_id"])
            messages += 1
    problems = []
    for label, bad in (("acknowledged but not stored", acked - stored), ("stored, event never published",
                       stored - ids.keys()), ("event for a registration not stored", ids.keys() - stored),
                       ("more than one event id", {a for a, e in ids.items() if len(e) > 1}),
                       ("events left in the outbox", set(stuck))):
        if bad:
            problems.append(f"{label}: {sorted(bad)[:10]} ({len(bad)})")
    figures = {"requests": len(results), "acknowledged": len(acked), "stored": len(stored),
               "not_answered": sum(1 for r in results if r["status"] is None),
               "answers": dict(Counter(str(a) for r in results for a in r["seen"])),
               "redelivered_messages": messages - len(ids)}
    return problems, figures
