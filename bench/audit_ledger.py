"""Audit ledger: append rate and verification rate, in entries per second.

    source var/env && .venv/bin/python -m bench.audit_ledger [--entries 100000]

Append: the service's own storage path (`AuditRepo.append`: duplicate check, head read, entry
insert keyed by position, guarded head update) against the FerretDB in var/env, one appender,
into a scratch database dropped afterwards; the broker is not in the loop. Verification: the
whole ledger read back in pages and checked the way GET /api/v1/audit/verify and the offline
verifier do (canonical encoding, chain hashes, leaf hashes, the Merkle root of a checkpoint
over every entry), timed with and without the database read. Not part of `make test`.
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
from services.audit.storage import AuditRepo, AuditStore

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
    args = parser.parse_args(argv)
    client = MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27018/"), tz_aware=True)
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    store = SimpleNamespace(db=client[name], append_lock=threading.Lock(), service_name="audit")
    try:
        for collection, models in AuditStore.indexes.items():
            for model in models:
                store.db[collection].create_indexes([model])
        repo = AuditRepo(store)
        batch = list(events(args.entries))
        now = datetime.now(timezone.utc)
        started = lap = time.perf_counter()
        step = max(args.entries // 10, 1)
        for n, event in enumerate(batch, 1):
            repo.append(event, now)
            if n % step == 0:  # shows whether the rate holds as the ledger grows
                print(f"  ... {n:,} appended, last {step:,} at {step / (time.perf_counter() - lap):,.0f}/s", flush=True)
                lap = time.perf_counter()
        append_s = time.perf_counter() - started
        assert repo.head()["size"] == args.entries

        started = time.perf_counter()
        stored = [{"position": e["position"], "event": e["event"], "prev_hash": e["prev_hash"], "hash": e["hash"]}
                  for e in repo.iter_entries()]
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        leaves, problems = ledger.verify(stored)
        root = ledger.merkle_root(leaves)
        check_s = time.perf_counter() - started
        assert not problems and len(root) == 64

        print(f"audit ledger, {args.entries:,} entries of ~{len(ledger.canonical(batch[0]))} bytes, FerretDB at "
              f"{client.address[0]}:{client.address[1]}, one appender, {os.cpu_count()} CPUs")
        print(f"  append (AuditRepo.append, sequential):     {args.entries / append_s:10,.0f} entries/s  "
              f"({append_s:.1f} s)")
        print(f"  verify, chain + Merkle root, in memory:    {args.entries / check_s:10,.0f} entries/s  "
              f"({check_s:.2f} s; what the offline verifier does with an export)")
        print(f"  verify, including the read from FerretDB:  {args.entries / (read_s + check_s):10,.0f} entries/s  "
              f"({read_s + check_s:.1f} s; what GET /api/v1/audit/verify does)")
    finally:
        client.drop_database(name)


if __name__ == "__main__":
    main()
