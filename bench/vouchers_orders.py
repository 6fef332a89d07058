"""Order placement alone, then a burst of concurrent orders on one voucher, against the echo-RPC
ceiling measured in the same run.

    make bench BENCH=vouchers_orders                                  # 60 s, 2 processes x 8 clients
    make bench BENCH=vouchers_orders BENCH_ARGS="--seconds 20 --instances 2 --private-stack"

The vouchers service runs as `nameko run` processes (`--instances`, HTTP spread over them) on a fresh
vhost and database, its read models fed with qualification and agency events straight on the broker.
Sustained: `--processes` x `--clients` keep-alive clients place orders (price 2,000 fen) round the
`--vouchers` vouchers for `--seconds`; a voucher at its order limit leaves its client's round. That
is a closed loop: each client waits for its answer, so the median is about clients / rate whatever
the service does. `--rate R` is the open loop instead: orders are due at R a second in all, evenly
spaced, each sent by the next free client and timed from when it was due, so a late start counts
as waiting (no coordinated omission); the latency then is what a user arriving at that rate sees.
Burst:
`--burst` orders on one fresh voucher from `--burst-processes` processes, released at one instant,
each big enough that the balance runs out after 10; then the voucher must hold exactly what the 201s
say and the rest must be refused with a 409. Latency: each request's wall time on the client;
percentiles by nearest rank.
"""
import argparse
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import date, timedelta

from bench.run import (CALL_ERRORS, COUNT_HEADER, OUT, Client, count_cells, cpu_seconds, db_counts, diff, echo_ceiling,
                       fan_out, fresh_vhost, percentile, start_echo, start_services)

FACE, BURST_PRICE = 2_000_000, 400_000   # 50 % subsidy: 200,000 fen an order, 10 of them empty the voucher


def enterprise(n):
    from stdnum.cn import uscc
    body = f"91330100MA3C{n:05d}"
    return body + uscc.calc_check_digit(body)


PROGRAMME = {
    "name": "基准测试知识产权服务券", "region": "331021", "fund_source": "中小企业发展专项资金",
    "opens_on": "2020-01-01", "closes_on": "2099-12-31", "validity_days": 180, "redemption_model": "agency_redeems",
    "tiers": [{"tier": "srdi_sme", "face_value_fen": FACE, "annual_cap_fen": 5 * FACE}],
    "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                   "item_cap_fen": 1_000_000, "agency_kinds": ["patent"]}]}


def seed(amqp_uri, count):
    """The read models' facts, as the enterprises and providers services would publish them."""
    import json
    from datetime import datetime, timezone

    from kombu import Connection

    from ipvkit.amqp import events_exchange
    from ipvkit.events import new_event
    now, actor = datetime.now(timezone.utc), {"role": "officer", "id": "bench"}
    events = [new_event(type="enterprise.qualification_granted", producer="enterprises", aggregate_id=f"q-{n}",
                        sequence=1, actor=actor, now=now, data={
                            "qualification_id": f"q-{n}", "enterprise_id": enterprise(n), "tier": "srdi_sme",
                            "level": "provincial", "certificate_no": f"Q-{n}", "issuing_authority": "省工信厅",
                            "valid_from": "2020-01-01", "valid_to": "2099-12-31"})
              for n in range(count)]
    events.append(new_event(type="provider.registered", producer="providers", aggregate_id="ag-1", sequence=1,
                            actor=actor, now=now, data={
                                "agency_id": "ag-1", "name": "基准专利代理事务所", "credit_code": "91330100MA2H00001P",
                                "kind": "patent", "region": "331021", "service_codes": ["PAT-01"],
                                "related_credit_codes": [], "eligibility_line": "B", "level": "A", "eligible": True}))
    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for e in events:
            producer.publish(json.dumps(e, ensure_ascii=False), exchange=events_exchange(e["producer"]),
                             routing_key=e["type"], content_type="application/json", content_encoding="utf-8")


def apply_all(ctx, pid, enterprises):
    """One voucher per enterprise, retried while its qualification is not in the read model yet."""
    vouchers, lock = {}, threading.Lock()

    def one(chunk):
        for code in chunk:
            for _ in range(120):
                r = ctx.call("POST", "/api/v1/vouchers", "enterprise", code, json={"programme_id": pid})
                if r.status_code == 201:
                    with lock:
                        vouchers[code] = r.json()["voucher_id"]
                    break
                time.sleep(0.5)
            else:
                sys.exit(f"apply for {code}: {r.status_code} {r.text}")
    threads = [threading.Thread(target=one, args=(enterprises[i::8],)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return [(code, vouchers[code]) for code in enterprises]


def order_body(voucher_id, price):
    return {"voucher_id": voucher_id, "agency_id": "ag-1", "service_code": "PAT-01", "price_fen": price,
            "deliver_by": (date.today() + timedelta(days=60)).isoformat()}


def sustained(process_no, clients, total, seconds, routes, signer, vouchers, rate=0.0, processes=1):
    """One load process: each of its clients places orders round its own share of the vouchers
    (`total` clients in all). With `rate` (orders/s over all `processes`), this process's orders
    are due at rate / processes a second, offset so the processes interleave; a client takes the
    next due time, waits for it, and the order's latency is measured from it."""
    samples, errors, lock, end = [], Counter(), threading.Lock(), time.monotonic() + seconds
    interval = processes / rate if rate else 0.0
    first = time.perf_counter() + process_no / processes * interval
    due = (first + k * interval for k in range(10 ** 9))

    def one(n):
        ctx = Client(process_no * 100 + n, routes, signer)
        mine = list(vouchers[process_no * clients + n::total])
        i = 0
        while time.monotonic() < end and mine:
            code, vid = mine[i % len(mine)]
            started = time.perf_counter()
            if rate:
                with lock:
                    started = next(due)
                time.sleep(max(0.0, started - time.perf_counter()))
            try:
                r = ctx.call("POST", "/api/v1/orders", "enterprise", code, json=order_body(vid, 2_000))
                status = r.status_code
            except CALL_ERRORS as exc:
                status = type(exc).__name__
            took = time.perf_counter() - started
            with lock:
                if status == 201:
                    samples.append(took)
                else:
                    errors[str(status)] += 1
            if status == 422:   # at its order limit
                mine.remove((code, vid))
            else:
                i += 1
    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return samples, dict(errors)


def burst(process_no, share, at, routes, signer, code, voucher_id):
    """`share` orders on one voucher, each from its own thread, all sent at wall-clock `at`."""
    out, lock = [], threading.Lock()

    def one(_):
        ctx = Client(process_no * 100, routes, signer)
        ctx.call("GET", f"/api/v1/vouchers/{voucher_id}", "enterprise", code)   # connection and token ready
        time.sleep(max(0.0, at - time.time()))
        started = time.perf_counter()
        r = ctx.call("POST", "/api/v1/orders", "enterprise", code, json=order_body(voucher_id, BURST_PRICE))
        with lock:
            out.append((time.perf_counter() - started, r.status_code,
                        r.json().get("subsidy_fen") if r.status_code == 201 else None))
    threads = [threading.Thread(target=one, args=(n,)) for n in range(share)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return out


def run_burst(args, routes, signer, officer, code, voucher_id):
    """(exact, the line to print) for `--burst` orders on one voucher released at one instant."""
    share = args.burst // args.burst_processes
    at = time.time() + 3
    shots = [x for part in fan_out(burst, args.burst_processes, share, at, routes, signer, code, voucher_id)
             for x in part]
    voucher = officer.call("GET", f"/api/v1/vouchers/{voucher_id}", "enterprise", code).json()
    made = [sub for _, status, sub in shots if status == 201]
    statuses = Counter(status for _, status, _ in shots)
    exact = (voucher["held_fen"] == sum(made) and voucher["free_fen"] + voucher["held_fen"] == FACE
             and set(statuses) <= {201, 409} and voucher["free_fen"] < BURST_PRICE // 2)
    times = sorted(t for t, _, _ in shots)
    return exact, (f"burst: {len(shots)} concurrent orders on one voucher from {args.burst_processes} processes: "
                   f"{dict(sorted(statuses.items()))}; p50 {ms(times, 50):.0f} ms, p99 {ms(times, 99):.0f} ms, "
                   f"max {times[-1] * 1000:.0f} ms; voucher free {voucher['free_fen']} + held {voucher['held_fen']} "
                   f"= face {FACE}, held = sum of the 201s' subsidies ({sum(made)}): "
                   + ("exact" if exact else "BROKEN"))


def ms(ordered, p):
    return percentile(ordered, p) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0, help="open loop: orders due per second in all (0: closed loop)")
    parser.add_argument("--vouchers", type=int, default=0, help="default: enough for 150 orders/s at 20 a voucher")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--burst-processes", type=int, default=4)
    parser.add_argument("--instances", type=int, default=1, help="vouchers processes on the same queues")
    parser.add_argument("--echo-seconds", type=float, default=10)
    parser.add_argument("--private-stack", action="store_true", help="own RabbitMQ node and FerretDB for this run")
    args = parser.parse_args(argv)

    from pymongo import MongoClient
    OUT.mkdir(parents=True, exist_ok=True)
    # The service trusts an issuer of the benchmark's own (by its public keys), as bench/run.py does.
    from tests.issuer import LocalIssuer
    issuer = LocalIssuer().start()
    os.environ.update(issuer.config)
    signer = issuer.signer()
    stack = None
    if args.private_stack:
        from tests.faults.harness import PrivateStack
        stack = PrivateStack.start()
        os.environ.update(AMQP_URI=stack.amqp_uri, MONGO_URI=stack.mongo_uri, IPV_RABBIT_NODE=stack.node)
    amqp_uri = fresh_vhost(os.environ["AMQP_URI"])
    mongo = MongoClient(os.environ["MONGO_URI"])
    count = args.vouchers or math.ceil(150 * args.seconds / 20)
    launched, echo = [], None
    try:
        launched, routes, _ = start_services(["vouchers"], {"vouchers": args.instances}, amqp_uri, mongo)
        echo = start_echo(amqp_uri)
        rpc_before = echo_ceiling(args.processes, args.clients, amqp_uri, args.echo_seconds)
        seed(amqp_uri, count + 1)
        officer = Client(0, routes, signer)
        programme = dict(PROGRAMME, budget_fen=(count + 1) * FACE)
        pid = officer.call("POST", "/api/v1/programmes", "officer", "bench", json=programme).json()["programme_id"]
        officer.call("POST", f"/api/v1/programmes/{pid}/open", "officer", "bench").raise_for_status()
        started = time.monotonic()
        vouchers = apply_all(officer, pid, [enterprise(n) for n in range(count + 1)])
        burst_code, burst_voucher = vouchers.pop()
        loop = f"open loop, {args.rate:g} orders due a second" if args.rate else "closed loop"
        print(f"vouchers x{args.instances}; {len(vouchers)} vouchers issued in {time.monotonic() - started:.0f} s; "
              f"load: {args.processes} processes x {args.clients} clients for {args.seconds:.0f} s, {loop}", flush=True)

        before, cpu_before, wall = db_counts(launched), cpu_seconds(launched), time.monotonic()
        results = fan_out(sustained, args.processes, args.clients, args.processes * args.clients, args.seconds,
                          routes, signer, vouchers, args.rate, args.processes)
        cpu = diff(cpu_seconds(launched), cpu_before)
        wall = time.monotonic() - wall
        samples = sorted(x for s, _ in results for x in s)
        errors = sum((Counter(e) for _, e in results), Counter())
        per_order = diff(db_counts(launched), before)

        burst_ok, burst_line = True, "burst: not run (--burst 0)"
        if args.burst:
            burst_ok, burst_line = run_burst(args, routes, signer, officer, burst_code, burst_voucher)

        rpc_after = echo_ceiling(args.processes, args.clients, amqp_uri, args.echo_seconds)
        rpc = sorted(rpc_before + rpc_after)

        rate, rpc_rate = len(samples) / args.seconds, len(rpc) / 2 / args.echo_seconds
        offered = f" (offered {args.rate:g}/s)" if args.rate else ""
        print(f"orders: {len(samples)} in {args.seconds:.0f} s = {rate:.1f}/s{offered}, p50 {ms(samples, 50):.0f} ms, "
              f"p95 {ms(samples, 95):.0f} ms, p99 {ms(samples, 99):.0f} ms; not 201: {dict(errors) or 0}")
        print(f"echo RPC (ceiling, same run, mean of before {len(rpc_before) / args.echo_seconds:.0f}/s and after "
              f"{len(rpc_after) / args.echo_seconds:.0f}/s): {rpc_rate:.0f}/s, p99 {ms(rpc, 99):.0f} ms; "
              f"orders/s = {rate / rpc_rate:.2f} x echo RPC/s")
        placed = max(len(samples), 1)
        print(f"CPU per order while placing ({wall:.0f} s, from /proc; every FerretDB and RabbitMQ on the machine): "
              + ", ".join(f"{part} {seconds / placed * 1000:.1f} ms" for part, seconds in
                          sorted(cpu.items(), key=lambda kv: -kv[1]))
              + f"; {sum(cpu.values()) / wall:.2f} of {os.cpu_count()} cores busy")
        print(f"database commands per order (vouchers):\n{'':<12}{COUNT_HEADER}\n{'vouchers':<12}"
              f"{count_cells(per_order, 'vouchers', placed)}")
        print(burst_line)
        return 0 if burst_ok else 1
    finally:
        for p in launched + ([echo] if echo else []):
            p.stop()
        mongo.drop_database("ipv_bench_vouchers")
        issuer.stop()
        if stack:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
