"""The vouchers service: entrypoints only; rules are in domain.py, storage in storage.py."""
import logging
from datetime import timedelta

from nameko.dependency_providers import Config
from ipvkit.rpc import rpc
from nameko.timer import timer

from ipvkit import contracts  # noqa: F401 - registers every event schema
from ipvkit.clock import Clock, utc_iso
from ipvkit.consumer import consume
from ipvkit.errors import BadRequest, Conflict, Forbidden, IllegalTransition, NotFound, RuleRefused
from ipvkit.events import new_event
from ipvkit.http import ServiceBase, api
from services.vouchers import domain, metrics
from services.vouchers import schemas as s
from services.vouchers.storage import (VoucherStore, claim_id_for, new_id, order_id_for, order_of_claim,
                                       voucher_of)

log = logging.getLogger(__name__)

NAME = "vouchers"
STAFF = ("officer", "auditor")
EVERYONE = ("enterprise", "agency") + STAFF
TERMS = ("name", "region", "fund_source", "opens_on", "closes_on", "validity_days", "redemption_model", "tiers",
         "catalogue")
RETRIES = 30  # guarded writes that lost a race re-read and try again; each loss means another write won
STALE_RESERVATION = timedelta(seconds=30)


def programme_view(doc):
    view = {k: doc[k] for k in TERMS + ("status", "revision", "budget_fen", "remaining_fen")}
    view["programme_id"] = doc["_id"]
    return view


def voucher_view(doc):
    keys = ("programme_id", "enterprise_id", "tier", "status", "face_value_fen", "free_fen", "held_fen", "paid_fen",
            "returned_fen", "valid_from", "valid_to", "redemption_model")
    view = {k: doc[k] for k in keys}
    view.update(voucher_id=doc["_id"], issued_at=utc_iso(doc["issued_at"]))
    return view


def claim_view(voucher, order_id, order):
    claim = order.get("claim")
    if not claim:
        return None
    view = {k: claim.get(k) for k in ("state", "amount_fen", "payee_role", "payee_id", "reason", "payment_ref",
                                      "paid_on")}
    view.update(claim_id=claim_id_for(order_id), order_id=order_id, voucher_id=voucher["_id"])
    return view


def order_view(voucher, order_id):
    order = voucher["orders"][order_id]
    keys = ("agency_id", "service_code", "state", "price_fen", "subsidy_fen", "copay_fen", "held_fen", "deliver_by",
            "placed_on")
    view = {k: order[k] for k in keys}
    view.update(order_id=order_id, voucher_id=voucher["_id"], programme_id=voucher["programme_id"],
                enterprise_id=voucher["enterprise_id"], delivered_on=order.get("delivered_on"),
                evidence=order.get("evidence"), documents=order.get("documents"), reason=order.get("reason"),
                claim=claim_view(voucher, order_id, order))
    return view


def may_see_order(principal, voucher, order):
    if principal.role == "enterprise":
        return voucher["enterprise_id"] == principal.id
    if principal.role == "agency":
        return order["agency_id"] == principal.id
    return principal.role in STAFF


def iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


class VouchersService(ServiceBase):
    name = NAME
    store = VoucherStore()
    clock = Clock()
    config = Config()

    def _event(self, actor, type_, aggregate_id, sequence, data, correlation_id=None, version=1):
        return new_event(type=type_, producer=NAME, aggregate_id=aggregate_id, sequence=sequence, data=data,
                         actor=actor, now=self.clock.now(), correlation_id=correlation_id, version=version)

    def _call_event(self, call, *args, version=1):
        actor = call.principal.as_actor() if call else {"role": "system", "id": NAME}
        return self._event(actor, *args, correlation_id=call.correlation_id if call else None, version=version)

    def _programme(self, programme_id):
        doc = self.store.programme(programme_id)
        if doc is None:
            raise NotFound(f"no programme {programme_id}")
        return doc

    def _voucher(self, voucher_id):
        doc = self.store.voucher(voucher_id) if voucher_id else None
        if doc is None:
            raise NotFound(f"no voucher {voucher_id}")
        return doc

    def _order(self, call, order_id):
        """The voucher holding an order, checked against the caller: 404 if there is no such
        order, 403 if it is someone else's."""
        voucher = self.store.voucher(voucher_of(order_id)) if voucher_of(order_id) else None
        if voucher is None or order_id not in voucher["orders"]:
            raise NotFound(f"no order {order_id}")
        if not may_see_order(call.principal, voucher, voucher["orders"][order_id]):
            raise Forbidden("this order belongs to another enterprise or agency")
        return voucher, voucher["orders"][order_id]

    # -- programmes ----------------------------------------------------------------------------
    def _terms(self, body):
        terms = {k: iso(body[k]) for k in TERMS}
        terms["budget_fen"] = body["budget_fen"]
        domain.check_terms(terms)
        return terms

    @api("POST", "/api/v1/programmes", roles=("officer",), body=s.ProgrammeIn, response=s.ProgrammeOut, status=201,
         summary="Create a programme (draft)")
    def create_programme(self, call):
        terms = self._terms(call.body)
        programme_id, revision_id = new_id("p"), new_id("r")
        event = self._call_event(call, "programme.created", programme_id, 1, dict(terms, programme_id=programme_id))
        doc = dict(terms, _id=programme_id, status="draft", revision=1, revision_id=revision_id,
                   remaining_fen=terms["budget_fen"], issued_fen=0, issue_no=0, created_at=self.clock.now())
        revision = dict(terms, _id=revision_id, programme_id=programme_id, revision=1)
        stored = self.store.create_programme(doc, revision, event, self.clock.now())
        return 201, programme_view(stored)

    @api("GET", "/api/v1/programmes", roles=EVERYONE, query=s.ProgrammeQuery, response=s.ProgrammePage,
         summary="List programmes")
    def list_programmes(self, call):
        limit = call.query["limit"]
        docs = self.store.programmes(call.query.get("status"), call.query.get("after"), limit)
        return {"items": [programme_view(d) for d in docs], "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}

    @api("GET", "/api/v1/programmes/<programme_id>", roles=EVERYONE, response=s.ProgrammeOut, summary="Get a programme")
    def get_programme(self, call):
        return programme_view(self._programme(call.path["programme_id"]))

    @api("PUT", "/api/v1/programmes/<programme_id>", roles=("officer",), body=s.ProgrammeIn, response=s.ProgrammeOut,
         summary="Change a draft or open programme's terms; vouchers already issued keep theirs")
    def change_programme(self, call):
        terms = self._terms(call.body)
        for _ in range(RETRIES):
            current = self._programme(call.path["programme_id"])
            status = domain.next_state("programme", domain.PROGRAMME_TRANSITIONS, current["status"], "change")
            delta = domain.budget_change(current, terms["budget_fen"])
            revision_no, revision_id = current["revision"] + 1, new_id("r")
            event = self._call_event(call, "programme.changed", current["_id"], current["seq"] + 1,
                                     dict(terms, programme_id=current["_id"], revision=revision_no))
            changes = {k: terms[k] for k in TERMS}
            changes.update(status=status, revision=revision_no, revision_id=revision_id)
            revision = dict(terms, _id=revision_id, programme_id=current["_id"], revision=revision_no)
            stored = self.store.change_programme(current, changes, [event], self.clock.now(), budget_delta=delta,
                                                 revision=revision)
            if stored is not None:
                metrics.set_budget(stored)
                return programme_view(stored)
        raise Conflict("the programme kept changing; try again")

    def _programme_step(self, call, action, type_, data_for):
        for _ in range(RETRIES):
            current = self._programme(call.path["programme_id"])
            status = domain.next_state("programme", domain.PROGRAMME_TRANSITIONS, current["status"], action)
            event = self._call_event(call, type_, current["_id"], current["seq"] + 1,
                                     dict(data_for(current), programme_id=current["_id"]))
            stored = self.store.change_programme(current, {"status": status}, [event], self.clock.now(),
                                                 remaining=current["remaining_fen"])
            if stored is not None:
                return programme_view(stored)
        raise Conflict("the programme kept changing; try again")

    @api("POST", "/api/v1/programmes/<programme_id>/open", roles=("officer",), response=s.ProgrammeOut,
         summary="Open a draft programme for applications")
    def open_programme(self, call):
        return self._programme_step(call, "open", "programme.opened", lambda p: {"budget_fen": p["budget_fen"]})

    @api("POST", "/api/v1/programmes/<programme_id>/close", roles=("officer",), response=s.ProgrammeOut,
         summary="Close a programme to new applications; issued vouchers run on")
    def close_programme(self, call):
        return self._programme_step(call, "close", "programme.closed", lambda p: {"remaining_fen": p["remaining_fen"]})

    @api("GET", "/api/v1/programmes/<programme_id>/balances", roles=STAFF, response=s.BalancesOut,
         summary="Conservation buckets: budget = remaining + free + held + paid + returned")
    def programme_balance(self, call):
        return self._balance(self._programme(call.path["programme_id"]))

    @api("GET", "/api/v1/programmes/<programme_id>/balances/recounted", roles=STAFF, response=s.RecountedBalancesOut,
         summary="The buckets as the last periodic recount found them (every 10 s), with when: for pages "
                 "and dashboards; /balances sums every voucher now")
    def programme_balance_recounted(self, call):
        programme = self._programme(call.path["programme_id"])
        found = self.store.recounted(programme["_id"])
        if found is None:  # opened since the last recount: count it now
            return dict(self._balance(programme), as_of=self.clock.now())
        return found

    def _balance(self, programme):
        return domain.programme_balance(programme, self.store.voucher_sums(programme["_id"], programme["issue_no"]))

    # -- issuance ------------------------------------------------------------------------------
    @api("POST", "/api/v1/vouchers", roles=("enterprise",), body=s.ApplyIn, response=s.VoucherOut, status=201,
         summary="Apply for a voucher: issued at once, or refused with the rule (422)")
    def apply(self, call):
        enterprise_id, today = call.principal.id, self.clock.today()
        programme = self._programme(call.body["programme_id"])
        domain.check_window(programme, today)
        terms = domain.choose_tier(programme["tiers"], self.store.qualifications(enterprise_id), today,
                                   call.body.get("tier"))
        valid_from, valid_to = domain.validity(today, programme["validity_days"])
        voucher_id = new_id("v", call.stable_hex(20))
        done = self.store.voucher(voucher_id)
        if done is not None:  # an earlier run of this request (crashed before answering) issued it
            self.store.settle_reservation(done["programme_id"], voucher_id)
            return 201, voucher_view(done)
        entry = {"enterprise_id": enterprise_id, "tier": terms["tier"], "face_value_fen": terms["face_value_fen"],
                 "annual_cap_fen": terms["annual_cap_fen"], "year": today.year, "revision_id": programme["revision_id"],
                 "redemption_model": programme["redemption_model"], "valid_from": valid_from.isoformat(),
                 "valid_to": valid_to.isoformat(), "reserved_at": self.clock.now(),
                 "actor": call.principal.as_actor(), "correlation_id": call.correlation_id}
        reserved = self.store.reserve(programme["_id"], voucher_id, entry, today.isoformat())
        if reserved is None:
            programme = self._programme(programme["_id"])
            earlier = (programme.get("pending") or {}).get(voucher_id)
            if earlier is not None:  # an earlier run of this request reserved, then crashed: finish it
                voucher = self._complete_issue(programme, voucher_id, earlier, programme["issue_no"])
            elif (voucher := self.store.voucher(voucher_id)) is None:
                domain.check_window(programme, today)
                raise RuleRefused("budget_exhausted", f"the programme has less than {terms['face_value_fen']} fen left")
            if voucher is None:
                raise RuleRefused("annual_cap", f"a voucher would take {enterprise_id} over its cap for {today.year}")
            return 201, voucher_view(voucher)
        if self.store.voucher(voucher_id) is not None:
            # The sweeper finished an earlier run's reservation between our check and ours: give ours back.
            self.store.undo_reservation(programme["_id"], voucher_id, entry["face_value_fen"])
            return 201, voucher_view(self.store.voucher(voucher_id))
        voucher = self._complete_issue(reserved, voucher_id, entry, reserved["issue_no"])
        if voucher is None:
            raise RuleRefused("annual_cap", f"a {terms['face_value_fen']} fen voucher would take {enterprise_id} over "
                              f"its {terms['annual_cap_fen']} fen cap for {today.year}")
        metrics.issued(reserved, voucher["face_value_fen"])
        return 201, voucher_view(voucher)

    def _complete_issue(self, programme, voucher_id, entry, issue_no):
        """Finishes a reservation from wherever it stopped: the annual cap, the voucher with its
        event, then the entry is cleared. Returns None (and gives the budget back) if the cap
        refuses."""
        face = entry["face_value_fen"]
        cap_key = f"{programme['_id']}|{entry['enterprise_id']}|{entry['year']}"
        if not self.store.take_cap(cap_key, voucher_id, face, entry["annual_cap_fen"]):
            self.store.undo_reservation(programme["_id"], voucher_id, face)
            return None
        data = {"programme_id": programme["_id"], "voucher_id": voucher_id, "enterprise_id": entry["enterprise_id"],
                "tier": entry["tier"], "face_value_fen": face, "valid_from": entry["valid_from"],
                "valid_to": entry["valid_to"], "budget_remaining_fen": programme["remaining_fen"]}
        event = self._event(entry["actor"], "voucher.issued", voucher_id, 1, data, entry.get("correlation_id"))
        doc = {"_id": voucher_id, "programme_id": programme["_id"], "enterprise_id": entry["enterprise_id"],
               "tier": entry["tier"], "face_value_fen": face, "free_fen": face, "held_fen": 0, "paid_fen": 0,
               "returned_fen": 0, "status": "live", "valid_from": entry["valid_from"], "valid_to": entry["valid_to"],
               "revision_id": entry["revision_id"], "redemption_model": entry["redemption_model"],
               "issue_no": issue_no, "issued_at": self.clock.now(), "orders": {}, "order_count": 0, "agencies": [],
               "claims_submitted": 0, "claims_approved": 0, "claims_total": 0}
        voucher = self.store.insert_voucher(doc, event, self.clock.now())
        self.store.settle_reservation(programme["_id"], voucher_id)
        return voucher

    @timer(interval=10)
    def sweep_reservations(self):
        """Finishes issuances a crash left half done (older than STALE_RESERVATION). A finished
        one is numbered with the programme's counter now, never below its true number, so the
        balance read stays exact (see domain.programme_balance)."""
        done = 0
        for programme, voucher_id, entry in self.store.stale_reservations(self.clock.now() - STALE_RESERVATION):
            self._complete_issue(programme, voucher_id, entry, programme["issue_no"])
            done += 1
        return done

    @api("GET", "/api/v1/vouchers", roles=("enterprise",) + STAFF, query=s.VoucherQuery, response=s.VoucherPage,
         summary="Vouchers: an enterprise sees its own (agencies see orders, not vouchers)")
    def list_vouchers(self, call):
        query = {k: call.query[k] for k in ("programme_id", "enterprise_id", "status") if k in call.query}
        if call.principal.role == "enterprise":
            query["enterprise_id"] = call.principal.id
        limit = call.query["limit"]
        docs = self.store.vouchers(query, call.query.get("after"), limit)
        return {"items": [voucher_view(d) for d in docs], "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}

    @api("GET", "/api/v1/vouchers/<voucher_id>", roles=("enterprise",) + STAFF, response=s.VoucherOut,
         summary="Get a voucher")
    def get_voucher(self, call):
        voucher = self._voucher(call.path["voucher_id"])
        if call.principal.role == "enterprise" and voucher["enterprise_id"] != call.principal.id:
            raise Forbidden("this voucher belongs to another enterprise")
        return voucher_view(voucher)

    def _end_voucher(self, call, voucher_id, action, extra):
        """Expiry or revocation: the free balance goes to `returned`; holds stay until they settle."""
        for _ in range(RETRIES):
            voucher = self._voucher(voucher_id)
            status = domain.next_state("voucher", domain.VOUCHER_TRANSITIONS, voucher["status"], action)
            data = dict(extra, programme_id=voucher["programme_id"], voucher_id=voucher_id,
                        enterprise_id=voucher["enterprise_id"], returned_fen=voucher["free_fen"],
                        held_fen=voucher["held_fen"])
            event = self._call_event(call, f"voucher.{status}", voucher_id, voucher["seq"] + 1, data)
            stored = self._change_voucher(
                voucher, {"status": "live", "free_fen": voucher["free_fen"]}, [event],
                inc={"free_fen": -voucher["free_fen"], "returned_fen": voucher["free_fen"]}, set_={"status": status})
            if stored is not None:
                return stored
        raise Conflict("the voucher kept changing; try again")

    @api("POST", "/api/v1/vouchers/<voucher_id>/revoke", roles=("officer",), body=s.ReasonIn, response=s.VoucherOut,
         summary="Revoke a voucher (e.g. fraud found): its free balance returns to the programme")
    def revoke_voucher(self, call):
        return voucher_view(self._end_voucher(call, call.path["voucher_id"], "revoke", {"reason": call.body["reason"]}))

    @timer(interval=60)
    def expire_vouchers(self):
        today, expired = self.clock.today(), 0
        for voucher in self.store.expiring(today.isoformat()):
            if domain.is_due_for_expiry(voucher, today):
                try:
                    self._end_voucher(None, voucher["_id"], "expire", {})
                    expired += 1
                except IllegalTransition:
                    pass  # revoked or expired meanwhile by another pod
        return expired

    # -- orders --------------------------------------------------------------------------------
    @api("POST", "/api/v1/orders", roles=("enterprise",), body=s.OrderIn, response=s.OrderOut, status=201,
         summary="Order a catalogue service from an agency; the subsidy is held on the voucher")
    def place_order(self, call):
        body, today = call.body, self.clock.today()
        if body["deliver_by"] < today:
            raise BadRequest("invalid body", fields={"deliver_by": ["must not be in the past"]})
        agency = self.store.agency(body["agency_id"])
        order_id = order_id_for(body["voucher_id"], call.stable_hex(8))
        max_orders = int(self.config.get("VOUCHER_MAX_ORDERS") or 20)
        with self.store.placing(body["voucher_id"]) as alone:
            stored = self._place_unread(call, agency, order_id, max_orders) if alone else None
            if stored is not None:
                return 201, order_view(stored, order_id)
            return self._place_read(call, agency, order_id, max_orders)

    def _place_read(self, call, agency, order_id, max_orders):
        """Reads the voucher, checks each rule in turn for its exact answer, and writes the order
        guarded on what it read; a lost race reads again."""
        body, today = call.body, self.clock.today()
        for _ in range(RETRIES):
            voucher = self._voucher(body["voucher_id"])
            if voucher["enterprise_id"] != call.principal.id:
                raise Forbidden("this voucher belongs to another enterprise")
            if order_id in voucher["orders"]:  # an earlier run of this request placed it, then crashed
                return 201, order_view(voucher, order_id)
            if voucher["status"] != "live" or voucher["valid_to"] < today.isoformat():
                raise IllegalTransition("voucher", "expired" if voucher["status"] == "live" else voucher["status"],
                                        "order from")
            item = domain.catalogue_item(self.store.revision(voucher["revision_id"])["catalogue"], body["service_code"])
            domain.check_agency(agency, item, voucher["enterprise_id"], today)
            if voucher["free_fen"] == 0:
                raise Conflict("the voucher has no free balance left", free_fen=0)
            if voucher.get("order_count", len(voucher["orders"])) >= max_orders:
                raise RuleRefused("voucher_order_limit", f"a voucher holds at most {max_orders} orders",
                                  max_orders=max_orders)
            amount, copay = domain.subsidy(body["price_fen"], item["subsidy_ratio_bp"], item["item_cap_fen"],
                                           voucher["free_fen"])
            if amount == 0:
                raise RuleRefused("subsidy_rounds_to_zero", "price x ratio is under one fen")
            # Balance-limited subsidies guard on the exact balance, so a concurrent release can't
            # leave this order with less than min(ratio, cap, balance at commit).
            balance = amount if amount == voucher["free_fen"] else {"$gte": amount}
            stored = self._write_order(call, voucher, order_id, amount, copay, balance, max_orders)
            if stored is not None:
                return 201, order_view(stored, order_id)
        raise Conflict("the voucher kept changing; try again")

    def _place_unread(self, call, agency, order_id, max_orders):
        """The common case in one write and no read: the voucher's fixed facts are known here, and
        the guard holds every condition the read path checks (live, not expired, this order not yet
        placed, under the order limit, the full subsidy free, no relay holding the outbox). None when
        the facts are not known, a rule refuses or the guard does not match: the read path then
        decides, with its exact answer (a replay's 201, the refusal), as it would have anyway."""
        body, today = call.body, self.clock.today()
        facts = self.store.voucher_facts(body["voucher_id"])
        if facts is None or facts["enterprise_id"] != call.principal.id:
            return None
        try:
            item = domain.catalogue_item(self.store.revision(facts["revision_id"])["catalogue"], body["service_code"])
            domain.check_agency(agency, item, facts["enterprise_id"], today)
        except RuleRefused:
            return None
        # The full subsidy: a balance short of it fails the guard, and the read path then gives what is left.
        amount, copay = domain.subsidy(body["price_fen"], item["subsidy_ratio_bp"], item["item_cap_fen"],
                                       item["item_cap_fen"])
        if amount == 0:
            return None
        return self._write_order(call, facts, order_id, amount, copay, {"$gte": amount}, max_orders, unread=True)

    def _write_order(self, call, voucher, order_id, amount, copay, balance, max_orders, unread=False):
        """The order and its event in one guarded write of the voucher; None if the guard failed."""
        body, today = call.body, self.clock.today()
        order = {"agency_id": body["agency_id"], "service_code": body["service_code"], "price_fen": body["price_fen"],
                 "subsidy_fen": amount, "copay_fen": copay, "held_fen": amount,
                 "deliver_by": body["deliver_by"].isoformat(), "placed_on": today.isoformat(), "state": "placed",
                 "seq": 1, "claim": None}
        data = {"programme_id": voucher["programme_id"], "voucher_id": voucher["_id"],
                "enterprise_id": voucher["enterprise_id"], "order_id": order_id, "agency_id": body["agency_id"],
                "service_code": body["service_code"], "price_fen": body["price_fen"], "subsidy_fen": amount,
                "copay_fen": copay, "redemption_model": voucher["redemption_model"],
                "deliver_by": order["deliver_by"]}
        event = self._call_event(call, "order.placed", order_id, 1, data)
        under_limit = {"order_count": {"$lt": max_orders}}
        if not unread:  # a voucher from before `order_count` was counted by the read (`len(orders)`)
            under_limit = {"$or": [under_limit, {"order_count": {"$exists": False}}]}
        return self._change_voucher(
            voucher, dict(under_limit, status="live", valid_to={"$gte": today.isoformat()}, free_fen=balance,
                          **{f"orders.{order_id}": {"$exists": False}}),
            [event], inc={"free_fen": -amount, "held_fen": amount, "order_count": 1},
            set_={f"orders.{order_id}": order}, add={"agencies": body["agency_id"]}, unread=unread)

    @api("GET", "/api/v1/orders", roles=EVERYONE, query=s.OrderQuery, response=s.OrderPage,
         summary="Orders: an enterprise sees its own, an agency those placed with it")
    def list_orders(self, call):
        query, principal = {}, call.principal
        if principal.role == "enterprise":
            query["enterprise_id"] = principal.id
        elif principal.role == "agency":
            query["agencies"] = principal.id
        if "voucher_id" in call.query:
            query["_id"] = call.query["voucher_id"]
        limit = call.query["limit"]
        vouchers = self.store.vouchers(query, call.query.get("after"), limit)
        items = [order_view(v, oid) for v in vouchers for oid, o in sorted(v["orders"].items())
                 if may_see_order(principal, v, o) and call.query.get("state", o["state"]) == o["state"]]
        return {"items": items, "next_cursor": vouchers[-1]["_id"] if len(vouchers) == limit else None}

    @api("GET", "/api/v1/orders/<order_id>", roles=EVERYONE, response=s.OrderOut, summary="Get an order")
    def get_order(self, call):
        voucher, _ = self._order(call, call.path["order_id"])
        return order_view(voucher, call.path["order_id"])

    def _order_step(self, call, order_id, plan):
        """One order or claim transition as one guarded write of the voucher. `plan(voucher,
        order)` returns (guard, inc, set, events) or raises; a lost race re-reads and re-plans."""
        step_key = call.stable_hex(32) if call and call.idempotency_key else None
        for _ in range(RETRIES):
            voucher, order = self._order(call, order_id)
            if step_key and order.get("step_key") == step_key:
                # This request's earlier run made the step and its answer was lost (the database went
                # away after the write): answer as that run would have, not with a 409 for the state it left.
                return voucher
            guard, inc, set_, events = plan(voucher, order)
            guard = dict(guard, **{f"orders.{order_id}.state": order["state"]})
            if step_key:  # kept with the step, in the same write: a retry under the same key knows it
                set_ = dict(set_ or {}, **{f"orders.{order_id}.step_key": step_key})
            stored = self._change_voucher(voucher, guard, events, inc=inc, set_=set_)
            if stored is not None:
                return stored
        raise Conflict("the order kept changing; try again")

    def _change_voucher(self, voucher, guard, events, inc=None, set_=None, add=None, unread=False):
        """A guarded write of `voucher` as read; the gauges move by what it moved (the timer reconciles them)."""
        stored = self.store.change_voucher(voucher, guard, events, self.clock.now(), inc=inc, set_=set_, add=add,
                                           unread=unread)
        if stored is not None:
            metrics.moved(stored["programme_id"], inc or {}, ended=(set_ or {}).get("status") in ("expired", "revoked"))
        return stored

    def _order_event(self, call, type_, voucher, order_id, order, version=1, **data):
        base = {"programme_id": voucher["programme_id"], "voucher_id": voucher["_id"],
                "enterprise_id": voucher["enterprise_id"], "order_id": order_id, "agency_id": order["agency_id"]}
        return self._call_event(call, type_, order_id, order["seq"] + 1, dict(base, **data), version=version)

    def _release(self, voucher, order_id, order):
        """Guard, increments and fields that release an order's hold: to the voucher while it is
        live, else to `returned` (guarded on the status it was read with)."""
        bucket, released_to = domain.release_bucket(voucher["status"])
        held = order["held_fen"]
        return ({"status": voucher["status"]}, {"held_fen": -held, bucket: held},
                {f"orders.{order_id}.held_fen": 0}, held, released_to)

    @api("POST", "/api/v1/orders/<order_id>/cancel", roles=("enterprise", "agency"), body=s.ReasonIn,
         response=s.OrderOut, summary="Cancel before delivery; the hold is released")
    def cancel_order(self, call):
        order_id = call.path["order_id"]

        def plan(voucher, order):
            state = domain.next_state("order", domain.ORDER_TRANSITIONS, order["state"], "cancel")
            guard, inc, set_, held, released_to = self._release(voucher, order_id, order)
            set_.update({f"orders.{order_id}.state": state, f"orders.{order_id}.reason": call.body["reason"],
                         f"orders.{order_id}.seq": order["seq"] + 1})
            event = self._order_event(call, "order.cancelled", voucher, order_id, order, reason=call.body["reason"],
                                      released_fen=held, released_to=released_to)
            return guard, inc, set_, [event]
        return order_view(self._order_step(call, order_id, plan), order_id)

    @api("POST", "/api/v1/orders/<order_id>/deliver", roles=("agency",), body=s.DeliverIn, response=s.OrderOut,
         summary="The agency records delivery with its evidence")
    def deliver_order(self, call):
        order_id, today = call.path["order_id"], self.clock.today().isoformat()
        body = dict(call.body)
        named = body.pop("documents", None) or {}
        known = self.store.uploaded_documents(list(named.values()))

        def plan(voucher, order):
            state = domain.next_state("order", domain.ORDER_TRANSITIONS, order["state"], "deliver")
            parties = {("enterprise", voucher["enterprise_id"]), ("agency", order["agency_id"])}
            documents, evidence = domain.delivery_documents(named, known, order_id, parties, body)
            event = self._order_event(call, "order.delivered", voucher, order_id, order, version=2,
                                      deliver_by=order["deliver_by"], delivered_on=today,
                                      on_time=today <= order["deliver_by"], evidence=evidence, documents=documents)
            return {}, {}, {f"orders.{order_id}.state": state, f"orders.{order_id}.delivered_on": today,
                            f"orders.{order_id}.evidence": evidence, f"orders.{order_id}.documents": documents,
                            f"orders.{order_id}.seq": order["seq"] + 1}, [event]
        return order_view(self._order_step(call, order_id, plan), order_id)

    def _simple_order_step(self, call, action, type_, **data):
        order_id = call.path["order_id"]

        def plan(voucher, order):
            state = domain.next_state("order", domain.ORDER_TRANSITIONS, order["state"], action)
            event = self._order_event(call, type_, voucher, order_id, order, **data)
            set_ = {f"orders.{order_id}.state": state, f"orders.{order_id}.seq": order["seq"] + 1}
            if "reason" in data:
                set_[f"orders.{order_id}.reason"] = data["reason"]
            return {}, {}, set_, [event]
        return order_view(self._order_step(call, order_id, plan), order_id)

    @api("POST", "/api/v1/orders/<order_id>/confirm", roles=("enterprise",), response=s.OrderOut,
         summary="The enterprise confirms delivery")
    def confirm_order(self, call):
        return self._simple_order_step(call, "confirm", "order.confirmed")

    @api("POST", "/api/v1/orders/<order_id>/dispute", roles=("enterprise",), body=s.ReasonIn, response=s.OrderOut,
         summary="The enterprise disputes delivery; an officer resolves it")
    def dispute_order(self, call):
        return self._simple_order_step(call, "dispute", "order.disputed", reason=call.body["reason"])

    @api("POST", "/api/v1/orders/<order_id>/resolve", roles=("officer",), body=s.ResolveIn, response=s.OrderOut,
         summary="Resolve a dispute: upheld releases the hold, otherwise the delivery stands as confirmed")
    def resolve_dispute(self, call):
        order_id, upheld = call.path["order_id"], call.body["upheld"]

        def plan(voucher, order):
            domain.next_state("order", domain.ORDER_TRANSITIONS, order["state"], "resolve")
            guard, inc, set_, held, released_to = ({}, {}, {}, 0, None)
            if upheld:
                guard, inc, set_, held, released_to = self._release(voucher, order_id, order)
            set_.update({f"orders.{order_id}.state": "released" if upheld else "confirmed",
                         f"orders.{order_id}.reason": call.body["resolution"], f"orders.{order_id}.seq": order["seq"] + 1})
            event = self._order_event(call, "order.dispute_resolved", voucher, order_id, order, upheld=upheld,
                                      resolution=call.body["resolution"], released_fen=held, released_to=released_to)
            return guard, inc, set_, [event]
        return order_view(self._order_step(call, order_id, plan), order_id)

    # -- claims --------------------------------------------------------------------------------
    def _claim(self, call, claim_id):
        if not voucher_of(claim_id):
            raise NotFound(f"no claim {claim_id}")
        voucher, order = self._order(call, order_of_claim(claim_id))
        if not order.get("claim"):
            raise NotFound(f"no claim {claim_id}")
        return voucher, order

    @api("POST", "/api/v1/claims", roles=("enterprise", "agency"), body=s.ClaimIn, response=s.ClaimOut, status=201,
         summary="The payee claims the subsidy of a confirmed order (企业兑付: the enterprise; 机构兑付: the agency)")
    def submit_claim(self, call):
        order_id = call.body["order_id"]

        def plan(voucher, order):
            role, payee_id = domain.payee(voucher["redemption_model"], dict(order, enterprise_id=voucher["enterprise_id"]))
            if (call.principal.role, call.principal.id) != (role, payee_id):
                raise Forbidden(f"under {voucher['redemption_model']} the {role} claims payment")
            state = domain.next_state("order", domain.ORDER_TRANSITIONS, order["state"], "claim")
            claim_id = claim_id_for(order_id)
            claim = {"state": "submitted", "amount_fen": order["held_fen"], "payee_role": role, "payee_id": payee_id,
                     "seq": 1, "reason": None, "payment_ref": None, "paid_on": None}
            base = {"programme_id": voucher["programme_id"], "voucher_id": voucher["_id"],
                    "enterprise_id": voucher["enterprise_id"], "order_id": order_id, "agency_id": order["agency_id"],
                    "claim_id": claim_id, "amount_fen": order["held_fen"]}
            event = self._call_event(call, "claim.submitted", claim_id, 1, dict(
                base, payee_role=role, payee_id=payee_id, invoice_no=order["evidence"]["invoice_no"],
                deliverable_sha256=order["evidence"]["deliverable_sha256"]))
            return ({}, {"claims_submitted": 1, "claims_total": 1},
                    {f"orders.{order_id}.state": state, f"orders.{order_id}.claim": claim}, [event])
        voucher = self._order_step(call, order_id, plan)
        return 201, claim_view(voucher, order_id, voucher["orders"][order_id])

    def _claim_step(self, call, action, extra_plan=None, **data):
        claim_id = call.path["claim_id"]
        if not voucher_of(claim_id):
            raise NotFound(f"no claim {claim_id}")
        order_id = order_of_claim(claim_id)

        def plan(voucher, order):
            claim = order.get("claim")
            if not claim:
                raise NotFound(f"no claim {claim_id}")
            state = domain.next_state("claim", domain.CLAIM_TRANSITIONS, claim["state"], action)
            guard, inc, set_ = {f"orders.{order_id}.claim.state": claim["state"]}, {}, {}
            if extra_plan:
                guard, inc, set_ = extra_plan(voucher, order, guard)
            inc[f"claims_{claim['state']}"] = -1
            if state in domain.PENDING_CLAIM_STATES:
                inc[f"claims_{state}"] = 1
            set_.update({f"orders.{order_id}.claim.state": state, f"orders.{order_id}.claim.seq": claim["seq"] + 1})
            set_.update({f"orders.{order_id}.claim.{k}": v for k, v in data.items() if k in ("reason", "payment_ref", "paid_on")})
            base = {"programme_id": voucher["programme_id"], "voucher_id": voucher["_id"],
                    "enterprise_id": voucher["enterprise_id"], "order_id": order_id, "agency_id": order["agency_id"],
                    "claim_id": claim_id, "amount_fen": claim["amount_fen"]}
            event_data = dict(base, **data)
            if action == "reject":
                event_data.update(released_fen=order["held_fen"], released_to=domain.release_bucket(voucher["status"])[1])
            if action == "pay":
                event_data.update(payee_role=claim["payee_role"], payee_id=claim["payee_id"])
            event = self._call_event(call, f"claim.{state}", claim_id, claim["seq"] + 1, event_data)
            return guard, inc, set_, [event]
        voucher = self._order_step(call, order_id, plan)
        return claim_view(voucher, order_id, voucher["orders"][order_id])

    @api("GET", "/api/v1/claims", roles=EVERYONE, query=s.ClaimQuery, response=s.ClaimPage,
         summary="Claims: officers see all (e.g. ?state=submitted), payees and agencies their own")
    def list_claims(self, call):
        principal, state = call.principal, call.query.get("state")
        if principal.role == "enterprise":
            query = {"enterprise_id": principal.id}
        elif principal.role == "agency":
            query = {"agencies": principal.id}
        else:
            query = {f"claims_{state}": {"$gt": 0}} if state in domain.PENDING_CLAIM_STATES else {"claims_total": {"$gt": 0}}
        limit = call.query["limit"]
        vouchers = self.store.vouchers(query, call.query.get("after"), limit)
        items = [claim_view(v, oid, o) for v in vouchers for oid, o in sorted(v["orders"].items())
                 if o.get("claim") and may_see_order(principal, v, o) and state in (None, o["claim"]["state"])]
        return {"items": items, "next_cursor": vouchers[-1]["_id"] if len(vouchers) == limit else None}

    @api("GET", "/api/v1/claims/<claim_id>", roles=EVERYONE, response=s.ClaimOut, summary="Get a claim")
    def get_claim(self, call):
        claim_id = call.path["claim_id"]
        voucher, order = self._claim(call, claim_id)
        return claim_view(voucher, order_of_claim(claim_id), order)

    @api("POST", "/api/v1/claims/<claim_id>/approve", roles=("officer",), response=s.ClaimOut,
         summary="Approve a claim: it becomes payable")
    def approve_claim(self, call):
        return self._claim_step(call, "approve")

    @api("POST", "/api/v1/claims/<claim_id>/reject", roles=("officer",), body=s.ReasonIn, response=s.ClaimOut,
         summary="Reject a claim with a reason; the hold is released")
    def reject_claim(self, call):
        order_id = order_of_claim(call.path["claim_id"])

        def release(voucher, order, guard):
            extra_guard, inc, set_, _, _ = self._release(voucher, order_id, order)
            return dict(guard, **extra_guard), inc, set_
        return self._claim_step(call, "reject", release, reason=call.body["reason"])

    @api("POST", "/api/v1/claims/<claim_id>/pay", roles=("officer",), body=s.PayIn, response=s.ClaimOut,
         summary="Record payment of an approved claim: the hold becomes paid")
    def pay_claim(self, call):
        order_id = order_of_claim(call.path["claim_id"])
        paid_on = (call.body.get("paid_on") or self.clock.today()).isoformat()

        def pay(voucher, order, guard):
            held = order["held_fen"]
            return guard, {"held_fen": -held, "paid_fen": held}, {f"orders.{order_id}.held_fen": 0}
        return self._claim_step(call, "pay", pay, payment_ref=call.body["payment_ref"], paid_on=paid_on)

    # -- reconciliation RPC (agreed with the audit service) --------------------------------------
    @rpc
    def programme_balances(self):
        programmes = self.store.programmes(limit=10_000)
        sums, _, _ = self.store.figures(programmes)
        return [domain.programme_balance(p, sums[p["_id"]]) for p in programmes]

    @rpc
    def voucher_balances(self, programme_id, after=None, limit=1000):
        keys = ("programme_id", "enterprise_id", "face_value_fen", "free_fen", "held_fen", "paid_fen", "returned_fen",
                "status")
        limit = max(1, min(int(limit), 1000))
        docs = self.store.vouchers({"programme_id": programme_id}, after, limit)
        return {"vouchers": [dict({k: d[k] for k in keys}, voucher_id=d["_id"]) for d in docs],
                "next": docs[-1]["_id"] if len(docs) == limit else None}

    # -- read models ---------------------------------------------------------------------------
    @consume([("enterprises", "enterprise.qualification_granted"), ("enterprises", "enterprise.qualification_revoked"),
              ("enterprises", "enterprise.qualification_expired")])
    def on_qualification(self, event):
        """Qualifications by validity dates; a revocation date counts whenever it arrives."""
        data = event["data"]
        fields_ = {"enterprise_id": data["enterprise_id"], "tier": data["tier"]}
        if event["type"] == "enterprise.qualification_granted":
            fields_.update(valid_from=iso(data["valid_from"]), valid_to=iso(data["valid_to"]))
        elif event["type"] == "enterprise.qualification_revoked":
            fields_["revoked_on"] = iso(data["revoked_on"])
        self.store.apply_qualification(data["qualification_id"], fields_, event["sequence"])

    @consume([("providers", "provider.*")])
    def on_agency(self, event):
        """Each event sets the groups of fields it carries, newest sequence per group wins."""
        data, seq, type_ = event["data"], event["sequence"], event["type"]
        profile = {k: data[k] for k in ("name", "kind", "region", "service_codes", "related_credit_codes") if k in data}
        groups = []
        if type_ == "provider.registered":
            groups = [("profile", profile), ("status", {"status": "active"}),
                      ("rating", {"level": data["level"], "eligible": data["eligible"],
                                  "eligibility_line": data["eligibility_line"]}),
                      ("identity", {"credit_code": data["credit_code"]})]  # last: marks the registration applied
        elif type_ == "provider.profile_changed":
            groups = [("profile", profile)]
        elif type_ == "provider.status_changed":
            groups = [("status", {"status": data["new_status"]})]
        elif type_ == "provider.rating_changed":
            groups = [("rating", {"level": data["new_level"], "eligible": data["eligible"],
                                  "eligibility_line": data["eligibility_line"]})]
        elif type_ == "provider.blacklisted":
            groups = [("blacklist", {"blacklist": {"from": iso(data["listed_from"]), "to": iso(data["listed_to"])}})]
        elif type_ == "provider.blacklist_lifted":
            groups = [("blacklist", {"blacklist": None})]
        for group, fields_ in groups:
            self.store.apply_agency(data["agency_id"], group, seq, fields_)

    @consume([("documents", "document.uploaded")])
    def on_document(self, event):
        """The documents uploaded for orders, so a delivery can name them without asking the
        documents service (which may be down) while an agency waits."""
        data = event["data"]
        self.store.apply_document(data["document_id"], {k: data[k] for k in (
            "order_id", "kind", "sha256", "size_bytes", "media_type", "uploader_role", "uploader_id")})

    # -- housekeeping --------------------------------------------------------------------------
    @timer(interval=10)
    def refresh_metrics(self):
        """Reconciles the gauges with storage (each pod's writes move them only by its own writes),
        so every pod reports the same figures."""
        programmes = self.store.programmes(limit=10_000)
        as_of = self.clock.now()
        sums, live, claims = self.store.figures(programmes)
        balances = [domain.programme_balance(programme, sums[programme["_id"]]) for programme in programmes]
        for balance in balances:
            metrics.set_programme(balance, live[balance["programme_id"]])
        metrics.set_claims(claims)
        self.store.save_figures(balances, as_of)

    @timer(interval=1)
    def relay_outbox(self):
        """Publishes events a crash or a broker outage left in the outbox."""
        return self.store.relay_due(self.clock.now())

    @timer(interval=3600)
    def purge_idempotency_keys(self):
        return self.store.purge_idempotency_keys(self.clock.now() - timedelta(days=1))


SERVICE = VouchersService  # what `nameko run` starts
