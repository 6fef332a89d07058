"""The audit ledger over the real broker and database: every event once, in queue order with two
pods (one appends, the other takes over when it goes), gap-free under one process's group commits,
safe across a crash mid-append, tampering caught and named (by the API and by the offline verifier
on an export), proofs that verify offline and fail when altered; what the rules remember stays
bounded."""
import json
from datetime import datetime, timezone

import eventlet
import pytest
from nameko.testing.services import entrypoint_hook
from pymongo import MongoClient, monitoring

from ipvkit.amqp import events_exchange
from services.audit import ledger, verify
from services.audit.service import AuditService
from services.audit.storage import AuditRepo, key
from tests.conftest import dumps, eventually, free_port, publish_raw
from tests.integration.test_audit_reports import E1, E2, Events, audit  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def enterprises(ev, count):
    for n in range(count):
        ev.emit("enterprise.registered", "enterprises", f"e{n}", "2026-01-02", {
            "enterprise_id": E1, "name": f"企业{n}", "region": "350102", "industry": "C34", "size": "small"})


def wait_size(api, count):
    eventually(f"the ledger holds {count} entries", lambda: api.get("/api/v1/audit/head").json()["size"] >= count)


def lag_observations(api):
    line = next(l for l in api.get("/metrics").text.splitlines() if l.startswith("ipv_audit_lag_seconds_count"))
    return float(line.split()[-1])


def test_every_event_once_in_order_even_when_redelivered_or_malformed(audit, amqp_uri):
    api = audit()
    lagged = lag_observations(api)  # a process-wide counter: other tests' appends are in it
    ev = Events(amqp_uri)
    enterprises(ev, 3)
    publish_raw(amqp_uri, events_exchange("enterprises"), "enterprise.registered", dumps(ev.sent[1]))  # again
    publish_raw(amqp_uri, events_exchange("providers"), "provider.registered", b"{not json")
    enterprises(ev, 1)
    wait_size(api, 4)
    eventlet.sleep(0.5)
    items = api.get("/api/v1/audit/entries").json()["items"]
    assert [i["event_id"] for i in items] == [e["event_id"] for e in ev.sent]
    assert [i["position"] for i in items] == [0, 1, 2, 3]
    assert items[0]["prev_hash"] == ledger.GENESIS and items[1]["prev_hash"] == items[0]["hash"]
    assert api.get("/api/v1/audit/verify").json() == {"ok": True, "entries": 4, "head_size": 4, "checkpoints": 0,
                                                     "problems": []}
    assert "ipv_audit_ledger_entries 4.0" in api.get("/metrics").text
    assert lag_observations(api) == lagged + 4
    eventually("the read models hold all 4", lambda: api.get("/api/v1/audit/head").json()["projected"] == 4)
    with entrypoint_hook(api.container, "refresh_metrics") as hook:
        hook()
    assert "ipv_audit_projector_behind_entries 0.0" in api.get("/metrics").text


def handled_by(container):
    """The event ids this pod's `record` was handed, in order."""
    handled, spawn = [], container.spawn_worker

    def counting(entrypoint, args, kwargs, **more):
        if entrypoint.method_name == "record":
            handled.append(args[0]["event_id"])
        return spawn(entrypoint, args, kwargs, **more)
    container.spawn_worker = counting
    return handled


def test_two_pods_one_appends_in_queue_order_and_the_other_takes_over(audit, container_factory, amqp_uri,
                                                                       mongo_uri):
    api = audit()
    second = container_factory(AuditService, dict(api.config, WEB_SERVER_ADDRESS="127.0.0.1:0"))
    second.start()
    pods = {api.container: handled_by(api.container), second: handled_by(second)}
    db = MongoClient(mongo_uri)[api.config["MONGO_DB"]]

    def ledger_holds(events):
        def check():
            stored = list(db.entries.find({}, {"_id": 0}).sort("_id", 1))
            return {e["event_id"] for e in events} <= {s["event_id"] for s in stored} and stored
        return eventually(f"the ledger holds the {len(events)} events sent", check)

    ev = Events(amqp_uri)

    def handed(pod, events):   # of these events (the service's own may come by too)
        ids = {e["event_id"] for e in events}
        return [event_id for event_id in pods[pod] if event_id in ids]

    enterprises(ev, 40)
    ledger_holds(ev.sent)
    active = next(pod for pod in pods if handed(pod, ev.sent))
    standby = next(pod for pod in pods if pod is not active)
    assert handed(standby, ev.sent) == [], "the queue was shared: both pods appended"
    assert handed(active, ev.sent) == [e["event_id"] for e in ev.sent]

    active.stop()                     # its pod goes: the standby takes the queue over
    enterprises(ev, 40)
    stored = ledger_holds(ev.sent)
    assert handed(standby, ev.sent) == [e["event_id"] for e in ev.sent[40:]]
    sent = {e["event_id"] for e in ev.sent}
    assert [s["event_id"] for s in stored if s["event_id"] in sent] == [e["event_id"] for e in ev.sent]
    assert [s["position"] for s in stored] == list(range(len(stored)))
    assert len({s["event_id"] for s in stored}) == len(stored)
    assert ledger.verify(stored)[1] == []


def test_a_crash_between_the_entry_and_the_head_is_repaired(audit, amqp_uri, monkeypatch, mongo_uri):
    def crash(self, head, entry):
        raise RuntimeError("the pod died after inserting the entry")
    monkeypatch.setattr(AuditRepo, "_advance", crash)
    api = audit(EVENT_MAX_RETRIES=0)
    ev = Events(amqp_uri)
    enterprises(ev, 1)
    db = MongoClient(mongo_uri)[api.config["MONGO_DB"]]
    eventually("an entry inserted", lambda: db.entries.count_documents({}))
    assert api.get("/api/v1/audit/head").json()["size"] == 0          # inserted but not counted
    api.container.kill()
    monkeypatch.undo()
    restarted = audit(WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")    # repairs on start
    assert restarted.get("/api/v1/audit/head").json()["size"] == 1
    enterprises(ev, 1)
    wait_size(restarted, 2)
    assert restarted.get("/api/v1/audit/verify").json()["ok"] is True


def tamper(db, kind):
    """Changes the stored ledger the way an insider with database access would."""
    entries = db.entries
    if kind == "modified":
        entries.update_one({"_id": key(2)}, {"$set": {"event.data.name": "改过的名字"}})
        return 2
    if kind == "deleted":
        entries.delete_one({"_id": key(2)})
        return 2
    docs = list(entries.find({"position": {"$gte": 2}}).sort("_id", 1))
    entries.delete_many({"position": {"$gte": 2}})

    def at(doc, position):
        return dict(doc, _id=key(position), position=position)
    if kind == "inserted":
        forged = dict(docs[0], event_id="forged", event=dict(docs[0]["event"], event_id="forged"))
        forged["hash"] = ledger.chain_hash(forged["prev_hash"], ledger.canonical(forged["event"]))
        entries.insert_many([at(forged, 2)] + [at(d, d["position"] + 1) for d in docs])
    else:  # reordered: the entries at 2 and 3 change places
        entries.insert_many([at(docs[1], 2), at(docs[0], 3)] + docs[2:])
    return 2


@pytest.mark.parametrize("kind", ["modified", "deleted", "inserted", "reordered"])
def test_tampering_is_caught_and_named_by_the_api_and_the_offline_verifier(audit, amqp_uri, mongo_uri, kind, tmp_path):
    api = audit()
    ev = Events(amqp_uri)
    enterprises(ev, 5)
    wait_size(api, 5)
    checkpoint = api.post("/api/v1/audit/checkpoints", role="ops").json()
    (tmp_path / "kept.json").write_text(json.dumps(checkpoint))
    (tmp_path / "key.pem").write_text(api.get("/api/v1/audit/public-key").json()["public_key"])
    before = tmp_path / "before.jsonl"
    before.write_text(api.get("/api/v1/audit/export").text)
    assert verify.main([str(before), "--public-key", str(tmp_path / "key.pem")]) == 0

    position = tamper(MongoClient(mongo_uri)[api.config["MONGO_DB"]], kind)
    found = api.get("/api/v1/audit/verify").json()
    assert found["ok"] is False
    assert {"kind": kind, "position": position} in [{k: p[k] for k in ("kind", "position")} for p in found["problems"]]
    assert any(p["kind"] == "checkpoint" for p in found["problems"])      # the signed root no longer matches

    after = tmp_path / "after.jsonl"
    after.write_text(api.get("/api/v1/audit/export").text)
    count, problems = verify.check(str(after), (tmp_path / "key.pem").read_text(), [checkpoint])
    assert (kind, position) in [(p["kind"], p["position"]) for p in problems]
    assert verify.main([str(after), "--public-key", str(tmp_path / "key.pem"),
                        "--checkpoint", str(tmp_path / "kept.json")]) == 1


def test_proofs_verify_offline_and_fail_when_altered(audit, amqp_uri, event_tap):
    api = audit()
    tap = event_tap("audit", "audit.checkpoint_published")
    ev = Events(amqp_uri)
    enterprises(ev, 3)
    wait_size(api, 3)
    early = api.get("/api/v1/audit/entries/1/proof")    # no checkpoint yet: not in one, like a later entry
    assert early.status_code == 422 and early.json()["rule"] == "entry_after_checkpoint"
    older = api.post("/api/v1/audit/checkpoints").json()
    assert tap.next()["data"] == older                                    # published as an event ...
    wait_size(api, 4)                                                     # ... which the ledger records too
    enterprises(ev, 4)
    wait_size(api, 8)
    newer = api.post("/api/v1/audit/checkpoints").json()
    assert (older["size"], newer["size"]) == (3, 8)
    public = api.get("/api/v1/audit/public-key").json()["public_key"]
    assert ledger.checkpoint_signature_ok(older, public) and ledger.checkpoint_signature_ok(newer, public)

    inclusion = api.get("/api/v1/audit/entries/5/proof", checkpoint=8).json()
    event = inclusion["entry"]["event"]
    assert ledger.inclusion_ok(event, 5, inclusion["proof"], newer)
    assert not ledger.inclusion_ok(dict(event, occurred_at="2020-01-01T00:00:00.000Z"), 5, inclusion["proof"], newer)
    assert not ledger.inclusion_ok(event, 4, inclusion["proof"], newer)
    assert not ledger.inclusion_ok(event, 5, inclusion["proof"], dict(newer, root_hash=older["root_hash"]))

    consistency = api.get("/api/v1/audit/checkpoints/3/consistency", to=8).json()
    assert ledger.consistency_ok(older, newer, consistency["proof"])
    forged = dict(consistency["proof"], path=list(reversed(consistency["proof"]["path"])))
    assert not ledger.consistency_ok(older, newer, forged)
    refused = api.get("/api/v1/audit/entries/5/proof", checkpoint=3)
    assert refused.status_code == 422 and refused.json()["rule"] == "entry_after_checkpoint"
    assert api.get("/api/v1/audit/checkpoints/4/consistency").status_code == 404


def rewrite(db, position):
    """Changes an entry's content and recomputes its own hash and leaf, as an insider covering tracks
    would: the entry checks out alone, the link from the next one does not."""
    doc = db.entries.find_one({"_id": key(position)})
    event = dict(doc["event"], data=dict(doc["event"]["data"], name="改过的名字"))
    encoded = ledger.canonical(event)
    db.entries.update_one({"_id": key(position)}, {"$set": {
        "event": event, "hash": ledger.chain_hash(doc["prev_hash"], encoded), "leaf": ledger.leaf_hash(encoded).hex()}})


@pytest.mark.parametrize("since_last_checkpoint", [False, True])
def test_no_checkpoint_is_signed_over_a_tampered_ledger_an_anomaly_is_raised_instead(
        audit, amqp_uri, mongo_uri, event_tap, since_last_checkpoint):
    api = audit()
    flags = event_tap("audit", "audit.anomaly_detected")
    ev = Events(amqp_uri)
    enterprises(ev, 4)
    wait_size(api, 4)
    position = 1
    if since_last_checkpoint:      # the check then reads only the entries after the checkpoint
        assert api.post("/api/v1/audit/checkpoints", role="ops").status_code == 201
        wait_size(api, 5)          # its own event
        enterprises(ev, 3)
        wait_size(api, 8)
        position = 6
    signed = [c["size"] for c in api.get("/api/v1/audit/checkpoints").json()["items"]]
    rewrite(MongoClient(mongo_uri)[api.config["MONGO_DB"]], position)

    refused = api.post("/api/v1/audit/checkpoints", role="ops")
    assert refused.status_code == 422 and refused.json()["rule"] == "ledger_damaged", refused.text
    assert [(p["kind"], p["position"]) for p in refused.json()["problems"]] == [
        ("modified", position), ("broken_link", position + 1)]
    flag = flags.next()["data"]
    assert flag["rule"] == "ledger_tampered" and flag["ledger_positions"] == [position, position + 1]
    assert len(flag["evidence_event_ids"]) == 2
    assert "ipv_audit_ledger_problems 2.0" in api.get("/metrics").text
    with entrypoint_hook(api.container, "periodic_checkpoint") as hook:   # the timer refuses as well
        assert hook() is None
    assert [c["size"] for c in api.get("/api/v1/audit/checkpoints").json()["items"]] == signed
    listed = api.get("/api/v1/audit/anomalies", rule="ledger_tampered").json()["items"]
    assert [a["anomaly_id"] for a in listed] == [flag["anomaly_id"]]        # raised once, not on every try


class Commands(monitoring.CommandListener, list):
    """(command, collection, entries inserted) of every command one process sent."""

    def started(self, event):
        self.append((event.command_name, event.command.get(event.command_name),
                     len(event.command.get("documents", ()))))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def count(self, name, collection):
        return sum(1 for n, c, _ in self if (n, c) == (name, collection))


@pytest.fixture
def pods(mongo_uri):
    """`pods()`: the service's storage verbs on one scratch database, as one more audit process holds
    them (its own connection, group commit, head, projector cursor and lease), with the commands it sent."""
    from types import SimpleNamespace
    from uuid import uuid4

    from eventlet.greenpool import GreenPool
    from eventlet.semaphore import Semaphore

    from services.audit.storage import AuditStore
    name, clients = f"test_audit_{uuid4().hex[:10]}", []

    def pod():
        commands = Commands()
        clients.append(MongoClient(mongo_uri, tz_aware=True, event_listeners=[commands]))
        db = clients[-1][name]
        if len(clients) == 1:
            for collection, models in AuditStore.indexes.items():
                for model in models:
                    db[collection].create_indexes([model])
        store = SimpleNamespace(db=db, append_lock=Semaphore(), append_queue=[], head_cache=None, appended={},
                                unwritten={}, counted={}, projecting=Semaphore(), projector_id=uuid4().hex, dims={}, dims_position=None,
                                lease_until=None, prefetch_pool=GreenPool(4))
        repo = AuditRepo(store)
        repo.commands = commands
        return repo
    yield pod
    clients[0].drop_database(name)


@pytest.fixture
def repo(pods):
    return pods()


def registered(count, now, enterprise_id=E1, region="350102"):
    from ipvkit.events import new_event
    return [new_event(type="enterprise.registered", producer="enterprises", aggregate_id=f"e{n}", sequence=1,
                      actor={"role": "officer", "id": "o1"}, now=now,
                      data={"enterprise_id": enterprise_id, "name": f"企业{n}", "region": region, "industry": "C34",
                            "size": "small"}) for n in range(count)]


def test_concurrent_appends_of_one_process_are_committed_together_gap_free_and_once(repo):
    # 40 workers append at once, two of them the same event (a redelivery): the ones queued while
    # another wrote go in together, and the ledger holds each event once, in a chain that verifies.
    now = datetime.now(timezone.utc)
    events = registered(39, now)
    results = list(eventlet.GreenPool(40).imap(lambda e: repo.append(e, now), events + [events[7]]))
    assert sum(appended for _, appended in results) == 39
    inserts = [n for name, collection, n in repo.commands if (name, collection) == ("insert", "entries")]
    assert max(inserts) > 1 and len(inserts) < 39     # group commits, not one insert an event
    assert results[7][0]["position"] == results[-1][0]["position"]       # the repeat found its entry
    entries = [{k: e[k] for k in ("position", "event", "prev_hash", "hash")} for e in repo.iter_entries()]
    assert [e["position"] for e in entries] == list(range(39)) and repo.head()["size"] == 39
    assert ledger.verify(entries)[1] == []
    assert sorted(e["event"]["event_id"] for e in entries) == sorted(e["event_id"] for e in events)


def test_what_the_rules_remember_stays_small(repo):
    # 50 claims with one invoice number: the count is exact, the document keeps the first 20 uses;
    # a ring of the last 20 for split orders; an entry applied again counts nothing.
    for position in range(50):
        count, first = repo.tally("evidence", "invoice_no:INV-1", position, {"position": position})
        _, recent = repo.tally("split", "E|A|PAT-01", position, {"position": position}, recent=True)
    assert count == 50 and [i["position"] for i in first] == list(range(20))
    assert [i["position"] for i in recent] == list(range(30, 50))
    repo.write_read_models()
    repo.forget_read_models()                  # read back from the database
    assert repo.tally("evidence", "invoice_no:INV-1", 49, {"position": 49})[0] == 50
    doc = repo.db["tallies"].find_one({"_id": "evidence:invoice_no:INV-1"})
    assert doc["n"] == 50 and len(doc["items"]) == 20


def test_a_chunks_dimensions_are_read_once_ahead_and_keep_what_is_not_written_yet(repo):
    repo.db.vouchers.insert_many([{"_id": f"v{n}", "tier": "A", "programme": "P1"} for n in range(10)])
    repo.set_dimension("vouchers", "v3", {"tier": "B"})             # changed by an entry, not written yet
    before = repo.commands.count("find", "vouchers")
    repo.prefetch([("vouchers", f"v{n}") for n in range(10)] + [("vouchers", "v0"), ("vouchers", "new")])
    assert repo.commands.count("find", "vouchers") - before == 11     # each key once
    assert repo.dimension("vouchers", "v3") == {"_id": "v3", "tier": "B", "programme": "P1"}
    assert repo.dimension("vouchers", "v0")["tier"] == "A" and repo.dimension("vouchers", "new") == {}
    assert repo.commands.count("find", "vouchers") - before == 11     # then from memory


def test_a_tally_is_not_overwritten_when_someone_else_changed_it(repo):
    # Only the projector's lease holder writes tallies, and it writes what it remembers; were
    # anyone else to count meanwhile, the write fails rather than lose their count.
    from services.audit.storage import ProjectionConflict
    repo.tally("evidence", "invoice_no:INV-1", 0, {"position": 0})
    repo.write_read_models()
    repo.db["tallies"].update_one({"_id": "evidence:invoice_no:INV-1"}, {"$set": {"n": 5, "last": 4}})
    assert repo.tally("evidence", "invoice_no:INV-1", 5, {"position": 5})[0] == 2     # from what it remembers
    with pytest.raises(ProjectionConflict):
        repo.write_read_models()
    assert repo.db["tallies"].find_one({"_id": "evidence:invoice_no:INV-1"})["n"] == 5
    repo.forget_read_models()
    assert repo.tally("evidence", "invoice_no:INV-1", 5, {"position": 5})[0] == 6


def test_the_projector_applies_what_its_pod_appended_without_reading_it_back(pods):
    # After each append the pod knows the head and holds the entry, so its projector reads neither
    # back (they were a read each per entry, a fifth of the chain's database commands). Entries
    # another pod appended (its sign-ins, or a takeover) are read, by the timer's run within a tick.
    from services.audit import projector
    from services.audit.domain import Thresholds
    now, rules = datetime.now(timezone.utc), Thresholds()
    one, other = pods(), pods()
    events = registered(30, now)
    for event in events:
        one.append(event, now)
        projector.run(one, now, rules)
    assert one.commands.count("find", "entries") == 0
    assert one.commands.count("find", "ledger_meta") <= 2     # the head at the first append, the cursor at the first run
    assert one.commands.count("update", "enterprises") == 30   # a run per append here: a save each
    assert one.projector_position() == 30
    assert one.projector_position() == 30
    assert one.db.enterprises.find_one({"_id": E1})["region"] == "350102"

    other.append(registered(1, now, E2, "310115")[0], now)    # another pod's append, unseen by the head `one` knows
    assert projector.run(one, now, rules) == 0
    assert projector.run(one, now, rules, fresh=True) == 1     # the timer's run reads the head, then the entry
    assert one.commands.count("find", "entries") == 1
    assert one.projector_position() == 31 and one.db.enterprises.find_one({"_id": E2})["region"] == "310115"
    assert len(one.store.appended) == 0                        # what it applied, it let go

    # All 31 again, in one run, as a pod taking over would (the lease lapsed, the cursor elsewhere):
    # each changed key is written once per SAVE_EVERY (20) entries, not once per entry.
    one.db.ledger_meta.update_one({"_id": "projector"}, {"$set": {"position": 0, "lease_until": now}})
    one.store.lease_until, before = None, one.commands.count("update", "enterprises")
    assert projector.run(one, now, rules, fresh=True) == 31
    assert one.commands.count("update", "enterprises") - before == 2     # 0-19: E1; 20-30: E1 and E2 together
    assert one.db.enterprises.find_one({"_id": E2})["region"] == "310115"


def test_the_cursor_goes_to_the_pod_that_appends(pods):
    # A standby pod's timer may take the cursor first (its own sign-ins, a takeover); it reads each
    # entry back, so it lets the lease go after its run, and the appending pod's next nudge takes it.
    from services.audit import projector
    from services.audit.domain import Thresholds
    now, rules = datetime.now(timezone.utc), Thresholds()
    appender, standby = pods(), pods()
    events = registered(40, now)
    for event in events[:20]:
        appender.append(event, now)
    assert projector.run(standby, now, rules, fresh=True) == 20
    assert standby.commands.count("find", "entries") == 20
    assert standby.db.ledger_meta.find_one({"_id": "projector"})["lease_until"].year == 1970   # let go
    for event in events[20:]:
        appender.append(event, now)
        projector.run(appender, now, rules)
    assert appender.projector_position() == 40
    assert appender.db.ledger_meta.find_one({"_id": "projector"})["owner"] == appender.store.projector_id
    assert appender.commands.count("find", "entries") == 0     # what it applied, it had in memory
    assert appender.store.appended == {}                       # and what the standby applied, it let go
    assert projector.run(standby, now, rules, fresh=True) == 0

