"""Audit ledger: append rate and verification rate, in entries per second.

    make bench BENCH=audit_ledger BENCH_ARGS="--entries 100000 --appends 5000 --appenders 8"

A ledger of `--entries` entries is bulk-loaded first (chained exactly as the service chains them),
into a scratch database on the FerretDB in var/env, dropped afterwards. Append: then `--appends`
more through the service's own storage path (`AuditRepo.append`: the entries queued by concurrent
appenders chained and inserted in one insert_many, one guarded head update: a group commit), from
`--appenders` threads as the service's workers would, on top of the full ledger so the rate is the
one at that size; the broker is not in the loop. Verification: the whole ledger read back in pages
and checked the way GET /api/v1/audit/verify and the offline verifier do (canonical encoding, chain
hashes, leaf hashes, the Merkle root of a checkpoint over every entry), timed with and without the
database read. Not part of `make test`.
"""
import argparse
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from pymongo import MongoClient

from ipvkit import contracts  # noqa: F401 - registers the event schemas
from ipvkit.events import new_event
from services.audit import ledger
from services.audit.storage import ENTRIES, HEAD, META, AuditRepo, AuditStore, key

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def events(count):
    """Order events of a realistic size (about 600 bytes each, as on the wire)."""
    for n in range(count):
        oid = f"o-{n:08d}"
        yield new_event(type="order.placed", producer="vouchers", aggregate_id=oid, sequence=1,
                        actor={"role": "enterprise", "id": "91350100M000100Y43"}, now=START + timedelta(seconds=n),
                        data={"programme_id": "P-2026", "voucher_id": f"v-{n // 4:08d}",
                              "enterprise_id": "91350100M000100Y43", "order_id": oid, "agency_id": f"ag-{n % 50}",
                              "service_code": "PAT-01", "price_fen": 100_000 + n, "subsidy_fen": 50_000,
                              "copay_fen": 50_000 + n, "redemption_model": "agency_redeems",
                              "deliver_by": "2026-09-30"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=5_000)
    parser.add_argument("--appenders", type=int, default=8,
                        help="concurrent appenders, as the service's workers (one group commit takes them all)")
    args = parser.parse_args(argv)
    client = MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27018/"), tz_aware=True)
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    store = SimpleNamespace(db=client[name], append_lock=threading.Lock(), service_name="audit", append_queue=[],
                            head_cache=None, appended={})
    try:
        for collection, models in AuditStore.indexes.items():
            for model in models:
                store.db[collection].create_indexes([model])
        repo = AuditRepo(store)
        batch = list(events(args.entries + args.appends))
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        prev, docs = ledger.GENESIS, []
        for position, event in enumerate(batch[:args.entries]):
            encoded = ledger.canonical(event)
            digest = ledger.chain_hash(prev, encoded)
            docs.append({"_id": key(position), "position": position, "event_id": event["event_id"],
                         "type": event["type"], "event": ledger.plain(event), "prev_hash": prev, "hash": digest,
                         "leaf": ledger.leaf_hash(encoded).hex(), "appended_at": now})
            prev = digest
        for offset in range(0, len(docs), 1000):
            store.db[ENTRIES].insert_many(docs[offset:offset + 1000], ordered=True)
        store.db[META].insert_one({"_id": HEAD, "size": args.entries, "hash": prev})
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        todo = iter(batch[args.entries:])
        lock = threading.Lock()

        def appender():
            while True:
                with lock:
                    event = next(todo, None)
                if event is None:
                    return
                repo.append(event, now)
        threads = [threading.Thread(target=appender) for _ in range(args.appenders)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        append_s = time.perf_counter() - started
        total = args.entries + args.appends
        assert repo.head()["size"] == total

        started = time.perf_counter()
        stored = [{"position": e["position"], "event": e["event"], "prev_hash": e["prev_hash"], "hash": e["hash"]}
                  for e in repo.iter_entries()]
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        leaves, problems = ledger.verify(stored)
        root = ledger.merkle_root(leaves)
        check_s = time.perf_counter() - started
        assert not problems and len(root) == 64

        print(f"audit ledger on FerretDB at {client.address[0]}:{client.address[1]}, entries of "
              f"~{len(ledger.canonical(batch[0]))} bytes, {os.cpu_count()} CPUs (shared)")
        print(f"  bulk load of {args.entries:,} chained entries:      {args.entries / load_s:10,.0f} entries/s  "
              f"({load_s:.1f} s; insert_many, not the service's path)")
        print(f"  append {args.appends:,} more (AuditRepo.append, {args.appenders} appenders): "
              f"{args.appends / append_s:10,.0f} entries/s  ({append_s:.1f} s)")
        print(f"  verify {total:,}: chain + Merkle root, in memory:  {total / check_s:10,.0f} entries/s  "
              f"({check_s:.2f} s; what the offline verifier does with an export)")
        print(f"  verify {total:,}: including the FerretDB read:     {total / (read_s + check_s):10,.0f} entries/s  "
              f"({read_s + check_s:.1f} s; what GET /api/v1/audit/verify does)")
    finally:
        client.drop_database(name)


if __name__ == "__main__":
    main()
