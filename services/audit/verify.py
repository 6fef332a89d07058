"""The auditor's offline verifier: checks an export of the ledger with no access to the system.

    python -m services.audit.verify audit-ledger.jsonl [--public-key key.pem] [--checkpoint cp.json ...]

The export (GET /api/v1/audit/export) holds the signing key, the signed checkpoints and every
entry. Pass `--public-key` with the key you trust (otherwise the export's own key is used, which
proves only that the export is self-consistent) and `--checkpoint` with checkpoints you kept
earlier (from the API or the `audit.checkpoint_published` events): they must verify and match the
export's entries, so a ledger rewritten since then is caught even if re-signed.
Prints each problem with the position it names; exits 1 if there is any.
"""
import argparse
import json
import sys

from services.audit import ledger


def read_export(path):
    key, head, checkpoints, entries = None, None, [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            kind = record.pop("kind", None)
            if kind == "key":
                key = record["public_key"]
            elif kind == "head":
                head = record
            elif kind == "checkpoint":
                checkpoints.append(record)
            elif kind == "entry":
                entries.append(record)
            else:
                raise ValueError(f"line {number}: unknown record kind {kind!r}")
    return key, head, checkpoints, entries


def check(path, public_pem=None, pinned=()):
    """(entry count, problems) for an export; `pinned` are checkpoints the auditor kept."""
    key, head, checkpoints, entries = read_export(path)
    public_pem = public_pem or key
    problems = []
    if public_pem is None:
        problems.append({"kind": "checkpoint", "position": 0, "detail": "no public key in the export or given"})
    entries.sort(key=lambda e: e["position"])  # as stored; the chain itself says what order is right
    _, found = ledger.verify(entries, list(checkpoints) + list(pinned), public_pem,
                             head_size=head["size"] if head else None, head_hash=head["hash"] if head else None)
    return len(entries), problems + found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="JSON lines from GET /api/v1/audit/export")
    parser.add_argument("--public-key", help="PEM file of the signing key you trust")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="a checkpoint JSON you kept earlier (repeatable)")
    args = parser.parse_args(argv)
    public_pem = open(args.public_key).read() if args.public_key else None
    pinned = [json.load(open(path)) for path in args.checkpoint]
    count, problems = check(args.export, public_pem, pinned)
    for problem in problems:
        print(f"position {problem['position']}: {problem['kind']}: {problem['detail']}")
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {count} entries")
        return 1
    print(f"OK: {count} entries chain and match {len(pinned)} pinned checkpoint(s) and the export's signed ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
