"""The providers service: entrypoints only; rules are in domain.py, storage in storage.py."""
import uuid
from datetime import timedelta

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from ipvkit import contracts  # noqa: F401 - registers every event schema
from ipvkit.clock import Clock, utc_iso
from ipvkit.consumer import consume
from ipvkit.contracts.provider import CREDIT_LEVELS
from ipvkit.errors import Conflict, Forbidden, IllegalTransition, NotFound, RuleRefused, Unavailable
from ipvkit.http import ServiceBase, api
from ipvkit.realm_admin import Realm
from ipvkit.storage import ConcurrentChange
from services.providers import domain, metrics
from services.providers import schemas as s
from services.providers.storage import ProviderStore

NAME = "providers"
STAFF = ("officer", "auditor")
OWN = ("agency",) + STAFF                      # the agency itself, and staff
PUBLIC_READERS = ("enterprise",) + OWN          # ratings are pushed to enterprises (measure 十一)
BROWSERS = ("enterprise",) + STAFF              # an agency sees only its own record, so it lists nothing
PROFILE = ("name", "kind", "licence_no", "region", "service_codes", "contact", "related_credit_codes")


class Policy(DependencyProvider):
    """The voucher-eligibility line and whether unrated agencies are eligible, from config."""

    def setup(self):
        config = self.container.config
        self.line = str(config.get("ELIGIBILITY_LINE") or "B")
        if self.line not in CREDIT_LEVELS:
            raise RuntimeError(f"ELIGIBILITY_LINE must be one of {', '.join(CREDIT_LEVELS)}, not {self.line!r}")
        unrated = config.get("UNRATED_ELIGIBLE", True)
        self.unrated_eligible = unrated if isinstance(unrated, bool) else str(unrated).lower() in ("1", "true", "yes")

    def get_dependency(self, worker_ctx):
        return self

    def eligible(self, agency):
        return domain.is_eligible(agency, self.line, self.unrated_eligible)


def blacklist_view(entry):
    if not entry:
        return None
    return {k: entry.get(k) for k in ("list_type", "reason", "source", "listed_from", "listed_to", "lifted_on",
                                      "lift_reason")}


def evaluation_view(agency_id, entry, current_id):
    view = {k: entry[k] for k in ("evaluation_id", "period_from", "period_to", "rules_version", "base", "deductions",
                                  "bonuses", "bonus_total", "bonus_capped", "score", "level", "bands", "note",
                                  "recorded_by")}
    view.update(agency_id=agency_id, recorded_at=utc_iso(entry["recorded_at"]),
                current=entry["evaluation_id"] == current_id)
    return view


def explain(evaluation):
    if evaluation is None:
        return ["no evaluation recorded yet: every agency starts at 100 points"]
    lines = [f"rules {evaluation['rules_version']}: base {evaluation['base']} points"]
    for item in evaluation["deductions"]:
        lines.append(f"-{item['points']} {item['indicator']} ({item['name']}) x{item['count']}"
                     + (" (capped)" if item["capped"] else "") + ("" if item["confirmed"] else " [assumed indicator]"))
    for item in evaluation["bonuses"]:
        lines.append(f"+{item['points']} {item['indicator']} ({item['name']}) x{item['count']}"
                     + ("" if item["confirmed"] else " [assumed indicator]"))
    if evaluation["bonus_capped"]:
        lines.append(f"bonus points capped at {evaluation['bonus_total']}")
    lines.append(f"= {evaluation['score']} points: level {evaluation['level']} "
                 f"(bands: {'; '.join(evaluation['bands'])})")
    return lines


def own_agency(principal, agency_id):
    if principal.role == "agency" and principal.id != agency_id:
        raise Forbidden("an agency may only see and change its own record")


class ProvidersService(ServiceBase):
    name = NAME
    store = ProviderStore()
    clock = Clock()
    policy = Policy()
    realm = Realm()

    def _agency(self, agency_id, history=False):
        doc = self.store.agency(agency_id, history=history)
        if doc is None:
            raise NotFound(f"no agency {agency_id}")
        return doc

    def _view(self, doc):
        view = {k: doc.get(k) for k in PROFILE + ("status", "status_reason", "level", "score")}
        view.update(agency_id=doc["_id"], credit_code=doc["_id"], blacklist=blacklist_view(doc.get("blacklist")),
                    eligible=self.policy.eligible(doc), eligibility_line=self.policy.line,
                    registered_at=utc_iso(doc["registered_at"]))
        return view

    def _standing(self, agency, eligible):
        """The fields every standing event shares, with the enterprises that have open orders."""
        affected = domain.open_orders_by_enterprise(self.store.open_orders(agency["_id"]))
        return {"agency_id": agency["_id"], "agency_name": agency["name"], "eligibility_line": self.policy.line,
                "eligible": eligible, "affected_enterprises": affected}

    def _write(self, call, agency_id, decide):
        """Reads the agency, lets `decide(agency)` return (changes, [(type, data)], push), writes them
        as one guarded update; reads again and retries if another writer got there first."""
        for _ in range(3):
            current = self._agency(agency_id)
            changes, events, push = decide(current)
            if not (changes or events or push):
                return current
            built = [self._event(call, type_, agency_id, current["seq"] + i, data)
                     for i, (type_, data) in enumerate(events, 1)]
            try:
                doc = self.store.change_agency(current, changes, built, self.clock.now(), push=push)
            except ConcurrentChange:
                continue
            self._count_agencies()
            return doc
        raise Conflict("the agency kept changing; try again")

    def _count_agencies(self):
        metrics.set_agency_counts(self.store.level_status_counts())

    # -- agencies ----------------------------------------------------------------------------
    @api("POST", "/api/v1/agencies", roles=("agency", "officer"), body=s.AgencyIn, response=s.AgencyOut, status=201,
         summary="Register an agency")
    def register(self, call):
        body = call.body
        agency_id = body["credit_code"]
        own_agency(call.principal, agency_id)
        doc = {"_id": agency_id, "name": body["name"].strip(), "kind": body["kind"],
               "licence_no": body["licence_no"].strip(), "region": body["region"],
               "region_prefixes": domain.region_prefixes(body["region"]), "service_codes": body["service_codes"],
               "contact": body["contact"], "related_credit_codes": body.get("related_credit_codes", []),
               "status": "active", "status_reason": None, "level": None, "score": None, "rating": None,
               "record": domain.service_record([]), "record_as_of": self.clock.now(),
               "blacklist": None, "evaluations": [], "blacklist_history": [], "registered_at": self.clock.now()}
        data = {"agency_id": agency_id, "credit_code": agency_id, "eligibility_line": self.policy.line,
                "level": None, "eligible": self.policy.eligible(doc),
                **{k: doc[k] for k in ("name", "kind", "region", "service_codes", "related_credit_codes")}}
        event = self._event(call, "provider.registered", agency_id, 1, data)
        stored = self.store.register(doc, event, self.clock.now())
        if stored is None:
            raise Conflict(f"agency {agency_id} is already registered", fields={"credit_code": ["already registered"]})
        self._count_agencies()
        return 201, self._view(stored)

    @api("GET", "/api/v1/agencies", roles=BROWSERS, query=s.AgencyQuery, response=s.AgencyPage,
         summary="List and search agencies (kind, region, service code, level, status)")
    def list_agencies(self, call):
        query = dict(call.query)
        limit = query.pop("limit")
        docs = self.store.agencies(limit=limit, **query)
        return {"items": [self._view(d) for d in docs], "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}

    @api("GET", "/api/v1/agencies/<agency_id>", roles=PUBLIC_READERS, response=s.AgencyOut, summary="Get an agency")
    def get_agency(self, call):
        own_agency(call.principal, call.path["agency_id"])
        return self._view(self._agency(call.path["agency_id"]))

    @api("POST", "/api/v1/agencies/<agency_id>/invitations", roles=("officer",), body=s.InvitationIn,
         response=s.InvitationOut, status=201, summary="Invite a person of the agency: an account that acts for it")
    def invite(self, call):
        """Agencies join by invitation: the officer who registered the agency makes its person's account,
        bound to it, with a one-time password. With e-mail configured in the realm, Keycloak's own
        execute-actions e-mail can carry the invitation instead."""
        agency_id = call.path["agency_id"]
        if self._agency(agency_id)["status"] != "active":
            raise RuleRefused("agency_not_active", f"agency {agency_id} is not active: no new accounts for it")
        if self.realm is None:
            raise Unavailable("this service has no access to the identity provider (IDENTITY_CLIENT_SECRET)")
        username, password = self.realm.invite(call.body["email"], "agency", agency_id)
        return 201, {"agency_id": agency_id, "username": username, "one_time_password": password}

    @api("PATCH", "/api/v1/agencies/<agency_id>", roles=("agency", "officer"), body=s.AgencyPatch,
         response=s.AgencyOut, summary="Change an agency's profile (scope, region, contact, affiliations)")
    def update_agency(self, call):
        agency_id = call.path["agency_id"]
        own_agency(call.principal, agency_id)

        def decide(agency):
            if agency["status"] == "cancelled":
                raise IllegalTransition("agency", "cancelled", "change")
            changes = {k: v for k, v in call.body.items() if agency.get(k) != v}
            if "name" in changes or "licence_no" in changes:
                changes.update({k: changes[k].strip() for k in ("name", "licence_no") if k in changes})
            if "region" in changes:
                changes["region_prefixes"] = domain.region_prefixes(changes["region"])
            if not changes:
                return {}, [], None
            new = dict(agency, **changes)
            data = {"agency_id": agency_id, **{k: new[k] for k in ("name", "kind", "region", "service_codes",
                                                                  "related_credit_codes")}}
            return changes, [("provider.profile_changed", data)], None
        return self._view(self._write(call, agency_id, decide))

    def _transition(self, call, action):
        agency_id = call.path["agency_id"]

        def decide(agency):
            status = domain.next_status(agency["status"], action)
            after = dict(agency, status=status)
            data = dict(self._standing(agency, self.policy.eligible(after)), old_status=agency["status"],
                        new_status=status, reason=call.body["reason"])
            return {"status": status, "status_reason": call.body["reason"]}, [("provider.status_changed", data)], None
        return self._view(self._write(call, agency_id, decide))

    @api("POST", "/api/v1/agencies/<agency_id>/suspend", roles=("officer",), body=s.ReasonIn, response=s.AgencyOut,
         summary="Suspend an active agency: it takes no new voucher orders")
    def suspend(self, call):
        return self._transition(call, "suspend")

    @api("POST", "/api/v1/agencies/<agency_id>/reinstate", roles=("officer",), body=s.ReasonIn,
         response=s.AgencyOut, summary="Reinstate a suspended agency")
    def reinstate(self, call):
        return self._transition(call, "reinstate")

    @api("POST", "/api/v1/agencies/<agency_id>/cancel", roles=("officer",), body=s.ReasonIn, response=s.AgencyOut,
         summary="Cancel an agency (final)")
    def cancel(self, call):
        return self._transition(call, "cancel")

    # -- ratings -------------------------------------------------------------------------------
    @api("POST", "/api/v1/agencies/<agency_id>/evaluations", roles=("officer",), body=s.EvaluationIn,
         response=s.EvaluationOut, status=201, summary="Record a credit evaluation for a period")
    def record_evaluation(self, call):
        agency_id, body = call.path["agency_id"], call.body
        if body["period_to"] > self.clock.today():
            raise RuleRefused("period_not_over", f"period_to {body['period_to']} is after today; evaluate a period "
                              "once it is over")
        result = domain.evaluate(body["period_to"], body["deductions"], body["bonuses"])
        entry = dict(result, evaluation_id="ev_" + uuid.uuid4().hex[:20], period_from=body["period_from"].isoformat(),
                     period_to=body["period_to"].isoformat(), note=body["note"], recorded_at=self.clock.now(),
                     recorded_by=call.principal.id)

        def decide(agency):
            if agency["status"] == "cancelled":
                raise IllegalTransition("agency", "cancelled", "evaluate")
            if not domain.becomes_current(agency.get("rating"), body["period_to"]):
                return {}, [], {"evaluations": entry}
            after = dict(agency, level=entry["level"], score=entry["score"])
            data = dict(self._standing(agency, self.policy.eligible(after)), old_level=agency.get("level"),
                        new_level=entry["level"], score=entry["score"], was_eligible=self.policy.eligible(agency))
            changes = {"level": entry["level"], "score": entry["score"],
                       "rating": {"evaluation_id": entry["evaluation_id"], "period_to": entry["period_to"]}}
            return changes, [("provider.rating_changed", data)], {"evaluations": entry}
        doc = self._write(call, agency_id, decide)
        return 201, evaluation_view(agency_id, entry, (doc.get("rating") or {}).get("evaluation_id"))

    @api("GET", "/api/v1/agencies/<agency_id>/evaluations", roles=OWN, response=s.EvaluationList,
         summary="Every evaluation of an agency, newest first; none is ever overwritten")
    def list_evaluations(self, call):
        agency_id = call.path["agency_id"]
        own_agency(call.principal, agency_id)
        doc = self._agency(agency_id, history=True)
        current = (doc.get("rating") or {}).get("evaluation_id")
        return {"items": [evaluation_view(agency_id, e, current) for e in reversed(doc["evaluations"])]}

    @api("GET", "/api/v1/agencies/<agency_id>/rating", roles=PUBLIC_READERS, response=s.RatingOut,
         summary="The current rating, how it was computed, and the service record as evidence")
    def rating(self, call):
        agency_id = call.path["agency_id"]
        own_agency(call.principal, agency_id)
        doc = self._agency(agency_id, history=True)
        current_id = (doc.get("rating") or {}).get("evaluation_id")
        evaluation = next((e for e in doc["evaluations"] if e["evaluation_id"] == current_id), None)
        return {"agency_id": agency_id, "agency_name": doc["name"], "level": doc.get("level"),
                "score": doc.get("score"), "status": doc["status"], "blacklist": blacklist_view(doc.get("blacklist")),
                "eligible": self.policy.eligible(doc), "eligibility_line": self.policy.line,
                "explanation": explain(evaluation),
                "evaluation": evaluation and evaluation_view(agency_id, evaluation, current_id),
                "service_record": doc["record"], "service_record_as_of": utc_iso(doc["record_as_of"])}

    # -- blacklist -------------------------------------------------------------------------------
    @api("POST", "/api/v1/agencies/<agency_id>/blacklist", roles=("officer",), body=s.BlacklistIn,
         response=s.AgencyOut, summary="List an agency as 严重失信 / 经营异常: it takes no new voucher orders")
    def blacklist(self, call):
        body = call.body

        def decide(agency):
            domain.check_blacklist(agency, body["listed_from"], body["listed_to"], self.clock.today())
            entry = {"list_type": body["list_type"], "reason": body["reason"].strip(), "source": body["source"].strip(),
                     "listed_from": body["listed_from"].isoformat(),
                     "listed_to": body["listed_to"] and body["listed_to"].isoformat(), "listed_by": call.principal.id}
            data = dict(self._standing(agency, False), reason=entry["reason"], source=entry["source"],
                        listed_from=entry["listed_from"], listed_to=entry["listed_to"])
            return {"blacklist": entry}, [("provider.blacklisted", data)], None
        return self._view(self._write(call, call.path["agency_id"], decide))

    @api("POST", "/api/v1/agencies/<agency_id>/blacklist/lift", roles=("officer",), body=s.LiftIn,
         response=s.AgencyOut, summary="Lift an agency's listing")
    def lift_blacklist(self, call):
        lifted_on = call.body.get("lifted_on") or self.clock.today()
        return self._view(self._write(call, call.path["agency_id"],
                                      lambda agency: self._lift(agency, call.body["reason"].strip(), lifted_on)))

    def _lift(self, agency, reason, lifted_on):
        domain.check_lift(agency)
        entry = dict(agency["blacklist"], lifted_on=lifted_on.isoformat(), lift_reason=reason)
        data = dict(self._standing(agency, self.policy.eligible(dict(agency, blacklist=None))), reason=reason,
                    lifted_on=entry["lifted_on"])
        return {"blacklist": None}, [("provider.blacklist_lifted", data)], {"blacklist_history": entry}

    @timer(interval=60)
    def lift_ended_listings(self):
        """Lifts listings whose listed_to has passed, each with its event."""
        today = self.clock.today()
        lifted = 0
        for agency in self.store.listings_over(today.isoformat()):
            try:
                self._write(None, agency["_id"], lambda current: self._lift_if_over(current, today))
                lifted += 1
            except IllegalTransition:
                pass  # lifted by hand meanwhile
        return lifted

    def _lift_if_over(self, agency, today):
        if not domain.listing_over(agency.get("blacklist"), today):
            raise IllegalTransition("agency", "listed", "lift early")
        return self._lift(agency, f"listing period ended on {agency['blacklist']['listed_to']}", today)

    # -- recommendations -------------------------------------------------------------------------
    @api("GET", "/api/v1/recommendations", roles=BROWSERS, query=s.RecommendationQuery,
         response=s.RecommendationList, summary="Eligible agencies for a service, ranked, each with its reason")
    def recommendations(self, call):
        code, region = call.query["service_code"], call.query.get("region")
        eligible = [a for a in self.store.candidates(code, region) if self.policy.eligible(a)]
        ranked = domain.rank([{"agency_id": a["_id"], "name": a["name"], "region": a["region"], "level": a.get("level"),
                               "score": a.get("score"), "service_record": a["record"]} for a in eligible])
        return {"service_code": code, "region": region, "eligibility_line": self.policy.line,
                "items": ranked[:call.query["limit"]]}

    # -- events from the vouchers service -----------------------------------------------------
    @consume([("vouchers", "order.*"), ("vouchers", "claim.*")])
    def on_order_event(self, event):
        """Builds the orders read model: who has open orders with which agency, and the agency's
        service record. Idempotent on event_id."""
        closed, increments = domain.order_effect(event)
        return self.store.apply_order_event(event, closed, increments)

    # -- housekeeping --------------------------------------------------------------------------
    @timer(interval=1)
    def relay_outbox(self):
        """Publishes events a crash or a broker outage left in the outbox."""
        return self.store.relay_due(self.clock.now())

    @timer(interval=10)
    def refresh_service_records(self):
        """Service records from the orders read model, kept in each agency for fast reads."""
        return self.store.refresh_service_records(self.clock.now())

    @timer(interval=30)
    def recount_agencies(self):
        """The gauge from storage, so every replica reports the same numbers."""
        self._count_agencies()

    @timer(interval=3600)
    def purge_idempotency_keys(self):
        return self.store.purge_idempotency_keys(self.clock.now() - timedelta(days=1))


SERVICE = ProvidersService  # what `nameko run` starts
