"""Finds by a field on the embedded store, as the vouchers service lists an enterprise's vouchers, an
agency's orders and the officers' claim queue, with 1,000 and 10,000 voucher-sized documents.

Each query runs twice in the same minute on the same server: as the services send it, and wrapped in
`$and`, which FerretDB never pushes down to SQLite (so it decodes every document, as it did before
scripts/ferretdb-v1.24.2.patch's fourth fix). The collection has the vouchers service's own indexes, so
an equality with a string goes through the field's index (the fifth fix); `--no-indexes` shows the
scan in SQLite instead. The ratio of the two columns is the figure that travels between machines. On
MongoDB both use the server's own plan.

    make bench BENCH=store_filters     # or: source var/env && .venv/bin/python -m bench.store_filters
"""
import argparse
import os
import statistics
import time
import uuid

from pymongo import ASCENDING, MongoClient

from services.vouchers.storage import VOUCHERS, VoucherStore

QUERIES = {
    "an enterprise's vouchers": {"enterprise_id": "E0007"},
    "an agency's orders": {"agencies": "A011"},
    "claims waiting (claims_submitted > 0)": {"claims_submitted": {"$gt": 0}},
    "live vouchers past their date": {"status": "live", "valid_to": {"$lt": "2026-06-01"}},
}


def voucher(n):
    """About the size of a voucher with a few orders (2-3 KB of JSON)."""
    return {"_id": f"V{n:07d}", "programme_id": f"P{n % 3}", "enterprise_id": f"E{n % 500:04d}",
            "status": "live" if n % 4 else "expired", "valid_to": f"2026-{1 + n % 12:02d}-28",
            "agencies": [f"A{n % 97:03d}", f"A{n % 31:03d}"], "claims_submitted": 1 if n % 200 == 0 else 0,
            "face_value_fen": 2_000_000, "free_fen": 1_200_000, "held_fen": 300_000, "paid_fen": 500_000,
            "orders": {f"O{n:07d}{k}": {"state": "paid", "agency_id": f"A{n % 97:03d}", "held_fen": 0,
                                         "price_fen": 250_000, "service": "patent_invention",
                                         "note": "发明专利申请代理" * 8} for k in range(4)}}


def timed(fn, rounds):
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, max(samples) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-indexes", action="store_true", help="without the vouchers service's indexes")
    args = parser.parse_args()
    uri = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27018/")
    client = MongoClient(uri)
    name = f"ipv_bench_filters_{uuid.uuid4().hex[:8]}"
    print(f"{uri}, database {name}, {args.rounds} rounds per query (median and max ms), "
          f"{'no indexes' if args.no_indexes else 'the vouchers service indexes'}, load average {os.getloadavg()[0]:.1f}")
    try:
        coll = client[name].vouchers
        if not args.no_indexes:
            coll.create_indexes(VoucherStore.indexes[VOUCHERS])
        have = 0
        for size in (int(s) for s in args.sizes.split(",")):
            coll.insert_many([voucher(n) for n in range(have, size)])
            have = size
            print(f"\n{size:,} documents")
            print(f"  {'query':40} {'pushed down':>16} {'every document':>18} {'ratio':>7}  found")
            for label, query in QUERIES.items():
                def fast():
                    return list(coll.find(query).sort("_id", ASCENDING).limit(50))

                def slow():
                    return list(coll.find({"$and": [query]}).sort("_id", ASCENDING).limit(50))
                assert [d["_id"] for d in fast()] == [d["_id"] for d in slow()], label
                p, p_max = timed(fast, args.rounds)
                e, e_max = timed(slow, args.rounds)
                print(f"  {label:40} {p:7.1f} ({p_max:6.1f}) {e:8.1f} ({e_max:7.1f}) {e / p:6.1f}×  {len(fast())}")
    finally:
        client.drop_database(name)


if __name__ == "__main__":
    main()
