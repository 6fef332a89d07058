"""The enterprises service: entrypoints only; rules are in domain.py, storage in storage.py."""
import logging
from datetime import timedelta

from nameko.timer import timer

from ipvkit import contracts  # noqa: F401 - registers every event schema
from ipvkit.clock import Clock, utc_iso
from ipvkit.consumer import Permanent, consume
from ipvkit.errors import Conflict, Forbidden, NotFound, Unavailable
from ipvkit.http import ServiceBase, api
from ipvkit.realm_admin import Realm
from ipvkit.storage import ConcurrentChange
from services.enterprises import domain
from services.enterprises import schemas as s
from services.enterprises.storage import EnterpriseStore

log = logging.getLogger(__name__)

NAME = "enterprises"
STAFF = ("officer", "auditor")
READERS = ("enterprise",) + STAFF


def enterprise_view(doc):
    return {"enterprise_id": doc["_id"], "credit_code": doc["_id"], "name": doc["name"], "region": doc["region"],
            "industry": doc["industry"], "size": doc["size"], "registered_at": utc_iso(doc["registered_at"]),
            "verified": doc.get("verified", True)}  # enterprises registered before verification existed: by officers


def qualification_view(doc):
    keys = ("enterprise_id", "tier", "level", "certificate_no", "issuing_authority", "valid_from", "valid_to",
            "status")
    view = {k: doc[k] for k in keys}
    view.update(qualification_id=doc["_id"], revoked_on=doc.get("revoked_on"), revoke_reason=doc.get("revoke_reason"))
    return view


def notification_view(doc):
    view = {k: doc[k] for k in ("kind", "title", "body", "agency_id", "old_standing", "new_standing", "order_ids",
                                "event_id", "read")}
    view.update(notification_id=doc["_id"], created_at=utc_iso(doc["created_at"]))
    return view


def own_record(principal, enterprise_id):
    if principal.role == "enterprise" and principal.id != enterprise_id:
        raise Forbidden("an enterprise may only see and change its own records")


class EnterprisesService(ServiceBase):
    name = NAME
    store = EnterpriseStore()
    clock = Clock()
    realm = Realm()

    def _enterprise(self, enterprise_id):
        doc = self.store.enterprise(enterprise_id)
        if doc is None:
            raise NotFound(f"no enterprise {enterprise_id}")
        return doc

    # -- enterprises -------------------------------------------------------------------------
    @api("POST", "/api/v1/enterprises", roles=("enterprise", "officer"), body=s.EnterpriseIn,
         response=s.EnterpriseOut, status=201, unverified=True,
         summary="Register an enterprise (a self-registered account: only that of its own credit code)")
    def register(self, call):
        body = call.body
        own_record(call.principal, body["credit_code"])
        data = {"enterprise_id": body["credit_code"], "name": body["name"].strip(), "region": body["region"],
                "industry": body["industry"], "size": body["size"]}
        event = self._event(call, "enterprise.registered", body["credit_code"], 1, data)
        doc = {"_id": body["credit_code"], "name": data["name"], "region": body["region"],
               "industry": body["industry"], "size": body["size"], "registered_at": self.clock.now(),
               # Registered by an officer or a bound account: known. By a self-registered account: an
               # officer verifies it, then that account (kept here) is bound to it.
               "verified": call.principal.verified}
        if call.principal.role == "enterprise":
            doc["account"] = call.principal.account
        stored = self.store.register(doc, event, self.clock.now())
        if stored is None:
            raise Conflict(f"enterprise {body['credit_code']} is already registered",
                           fields={"credit_code": ["already registered"]})
        return 201, enterprise_view(stored)

    @api("GET", "/api/v1/enterprises", roles=STAFF, query=s.EnterpriseQuery, response=s.EnterprisePage,
         summary="List and search enterprises")
    def list_enterprises(self, call):
        query = dict(call.query)
        limit = query.pop("limit")
        docs = self.store.enterprises(limit=limit, **query)
        return {"items": [enterprise_view(d) for d in docs],
                "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}

    @api("GET", "/api/v1/enterprises/<enterprise_id>", roles=READERS, response=s.EnterpriseOut, unverified=True,
         summary="Get an enterprise")
    def get_enterprise(self, call):
        own_record(call.principal, call.path["enterprise_id"])
        return enterprise_view(self._enterprise(call.path["enterprise_id"]))

    @api("POST", "/api/v1/enterprises/<enterprise_id>/verification", roles=("officer",), body=s.VerificationIn,
         response=s.EnterpriseOut, summary="Verify a self-registered enterprise (实名认证): its account then acts for it")
    def verify(self, call):
        """The officer's check of who registered the enterprise stands in for 实名认证: a real integration
        (the 电子营业执照 applet, the 政务服务网 legal-person sign-in) plugs in here and records its reference.
        Safe to repeat: a verified enterprise is not verified twice, its account is bound again."""
        enterprise_id = call.path["enterprise_id"]
        for _ in range(3):
            doc = self._enterprise(enterprise_id)
            if doc.get("verified", True):
                break
            data = {"enterprise_id": enterprise_id, **call.body}
            event = self._event(call, "enterprise.verified", enterprise_id, doc["seq"] + 1, data)
            try:
                doc = self.store.change_enterprise(doc, {"verified": True, "verification": dict(
                    call.body, by=call.principal.id, at=self.clock.now())}, event, self.clock.now())
                break
            except ConcurrentChange:
                continue
        else:
            raise Conflict("the enterprise kept changing; try again")
        if doc.get("account"):
            if self.realm is None:
                raise Unavailable("the verification is recorded, but this service has no access to the identity "
                                  "provider (IDENTITY_CLIENT_SECRET) to bind the account: repeat once it has")
            self.realm.bind_organisation(doc["account"], enterprise_id)
        return enterprise_view(doc)

    # -- qualifications ----------------------------------------------------------------------
    @api("POST", "/api/v1/enterprises/<enterprise_id>/qualifications", roles=("officer",), body=s.QualificationIn,
         response=s.QualificationOut, status=201, summary="Grant a quality-tier qualification")
    def grant_qualification(self, call):
        enterprise_id, body = call.path["enterprise_id"], call.body
        self._enterprise(enterprise_id)
        domain.check_grant(body["tier"], body["level"], body["valid_from"], body["valid_to"])
        qid = self.store.new_qualification_id()
        fields_ = {"enterprise_id": enterprise_id, "tier": body["tier"], "level": body["level"],
                   "certificate_no": body["certificate_no"].strip(), "issuing_authority": body["issuing_authority"],
                   "valid_from": body["valid_from"].isoformat(), "valid_to": body["valid_to"].isoformat()}
        event = self._event(call, "enterprise.qualification_granted", qid, 1, dict(fields_, qualification_id=qid))
        stored = self.store.add_qualification(dict(fields_, _id=qid, status="active"), event, self.clock.now())
        if stored is None:
            raise Conflict(f"certificate {fields_['certificate_no']} of tier {body['tier']} is already recorded",
                           fields={"certificate_no": ["already recorded"]})
        return 201, qualification_view(stored)

    @api("GET", "/api/v1/enterprises/<enterprise_id>/qualifications", roles=READERS,
         response=s.QualificationList, summary="All qualifications of an enterprise, any status")
    def list_qualifications(self, call):
        own_record(call.principal, call.path["enterprise_id"])
        self._enterprise(call.path["enterprise_id"])
        return {"items": [qualification_view(q) for q in self.store.qualifications(call.path["enterprise_id"])]}

    @api("POST", "/api/v1/enterprises/<enterprise_id>/qualifications/<qualification_id>/revoke",
         roles=("officer",), body=s.RevokeIn, response=s.QualificationOut, summary="Revoke a qualification")
    def revoke_qualification(self, call):
        enterprise_id, qid = call.path["enterprise_id"], call.path["qualification_id"]
        revoked_on = call.body.get("revoked_on") or self.clock.today()
        for _ in range(3):
            q = self.store.qualification(enterprise_id, qid)
            if q is None:
                raise NotFound(f"no qualification {qid} for enterprise {enterprise_id}")
            domain.check_revoke(q, revoked_on)
            data = {"qualification_id": qid, "enterprise_id": enterprise_id, "tier": q["tier"],
                    "reason": call.body["reason"], "revoked_on": revoked_on.isoformat()}
            event = self._event(call, "enterprise.qualification_revoked", qid, q["seq"] + 1, data)
            try:
                stored = self.store.change_qualification(q, {"status": "revoked", "revoked_on": data["revoked_on"],
                                                             "revoke_reason": data["reason"]}, event, self.clock.now())
                return qualification_view(stored)
            except ConcurrentChange:
                continue
        raise Conflict("the qualification kept changing; try again")

    @api("GET", "/api/v1/enterprises/<enterprise_id>/tiers", roles=READERS, query=s.TiersQuery, response=s.TiersOut,
         summary="The tiers an enterprise holds on a date")
    def tiers(self, call):
        enterprise_id = call.path["enterprise_id"]
        own_record(call.principal, enterprise_id)
        self._enterprise(enterprise_id)
        day = call.query.get("on") or self.clock.today()
        valid = [q for q in self.store.qualifications(enterprise_id) if domain.is_valid_on(q, day)]
        return {"enterprise_id": enterprise_id, "on": day.isoformat(), "tiers": domain.tiers_on(valid, day),
                "qualifications": [qualification_view(q) for q in valid]}

    @timer(interval=60)
    def expire_qualifications(self):
        """Marks qualifications whose validity has ended as expired, each with its event."""
        today = self.clock.today()
        expired = 0
        for q in self.store.active_ending_before(today.isoformat()):
            if not domain.is_due_for_expiry(q, today):
                continue
            data = {"qualification_id": q["_id"], "enterprise_id": q["enterprise_id"], "tier": q["tier"],
                    "valid_to": q["valid_to"]}
            event = self._event(None, "enterprise.qualification_expired", q["_id"],
                                q["seq"] + 1, data)
            try:
                self.store.change_qualification(q, {"status": "expired"}, event, self.clock.now())
                expired += 1
            except ConcurrentChange:
                pass  # revoked meanwhile, or another replica expired it: the next run sees the truth
        return expired

    # -- inbox ---------------------------------------------------------------------------------
    @api("GET", "/api/v1/enterprises/<enterprise_id>/notifications", roles=READERS, query=s.NotificationQuery,
         response=s.NotificationPage, summary="An enterprise's inbox, newest first")
    def notifications(self, call):
        enterprise_id = call.path["enterprise_id"]
        own_record(call.principal, enterprise_id)
        self._enterprise(enterprise_id)
        limit = call.query["limit"]
        docs = self.store.notifications(enterprise_id, unread=call.query.get("unread"), after=call.query.get("after"),
                                        limit=limit)
        return {"items": [notification_view(d) for d in docs],
                "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}

    @api("POST", "/api/v1/enterprises/<enterprise_id>/notifications/<notification_id>/read", roles=("enterprise",),
         response=s.NotificationOut, summary="Mark a notification read")
    def mark_read(self, call):
        enterprise_id = call.path["enterprise_id"]
        own_record(call.principal, enterprise_id)
        doc = self.store.mark_read(enterprise_id, call.path["notification_id"])
        if doc is None:
            raise NotFound("no such notification")
        doc["read"] = True
        return notification_view(doc)

    @consume([("providers", "provider.rating_changed"), ("providers", "provider.blacklisted"),
              ("providers", "provider.status_changed")])
    def on_agency_standing(self, event):
        """Alerts every enterprise with an open order with an agency that fell below the voucher
        line, was blacklisted, suspended or cancelled. Idempotent: one notification per (event,
        enterprise)."""
        message = domain.standing_notification(event)
        if message is None:
            return 0
        created = 0
        for affected in event["data"]["affected_enterprises"]:
            enterprise_id = affected["enterprise_id"]
            if self.store.enterprise(enterprise_id) is None:
                raise Permanent(f"enterprise {enterprise_id} is not registered here")
            doc = dict(message, _id=self.store.notification_id(event, enterprise_id), enterprise_id=enterprise_id,
                       agency_id=event["data"]["agency_id"], order_ids=affected["order_ids"],
                       event_id=event["event_id"], created_at=self.clock.now(), read=False)
            created += self.store.add_notification(doc)
        return created

    # -- housekeeping --------------------------------------------------------------------------
    @timer(interval=1)
    def relay_outbox(self):
        """Publishes events a crash or a broker outage left in the outbox."""
        return self.store.relay_due(self.clock.now())

    @timer(interval=3600)
    def purge_idempotency_keys(self):
        return self.store.purge_idempotency_keys(self.clock.now() - timedelta(days=1))


SERVICE = EnterprisesService  # what `nameko run` starts
