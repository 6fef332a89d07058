"""Sign-in and account events from Keycloak into the ledger, so the security trail is as tamper-evident
as the money trail. Keycloak keeps its own events (the realm has them on); the audit service reads them
with the tooling client and appends each one once, as an `identity.*` event whose event_id is derived
from Keycloak's event id, so a second read, a second pod or a restart appends nothing twice."""
import json
import re
import uuid
from datetime import datetime, timezone

from ipvkit.events import new_event

PRODUCER = "identity"
ACTOR = {"role": "system", "id": "keycloak"}
PAGE = 100
NAMESPACE = uuid.UUID("6f1c5d1e-3b0a-4f0e-9a57-6b1f2d9c1e01")  # event_id = uuid5(NAMESPACE, source)

USER_EVENTS = {
    "LOGIN": "identity.signed_in",
    "LOGIN_ERROR": "identity.sign_in_failed",
    "USER_DISABLED_BY_TEMPORARY_LOCKOUT": "identity.locked_out",
    "USER_DISABLED_BY_PERMANENT_LOCKOUT": "identity.locked_out",
    "LOGOUT": "identity.signed_out",
    "REGISTER": "identity.registered",
    "UPDATE_PASSWORD": "identity.credential_changed",
    "UPDATE_CREDENTIAL": "identity.credential_changed",
    "UPDATE_TOTP": "identity.credential_changed",
    "REMOVE_TOTP": "identity.credential_changed",
    "REMOVE_CREDENTIAL": "identity.credential_changed",
}
USER_PATH = re.compile(r"^users/([^/]+)(/role-mappings/realm)?$")


def _occurred(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _event(kind, source_id, ms, subject, data):
    event = new_event(type=kind, producer=PRODUCER, aggregate_id=subject or "realm", sequence=1, actor=ACTOR,
                      now=_occurred(ms), data=dict(keycloak_event_id=source_id, **data))
    event_id = str(uuid.uuid5(NAMESPACE, f"{kind}|{source_id}"))
    return dict(event, event_id=event_id, correlation_id=event_id)


def from_user_event(raw):
    """A Keycloak user event as a ledger event, or None for the kinds the trail does not keep
    (token refreshes, code exchanges: routine, and one per request)."""
    kind = USER_EVENTS.get(raw.get("type"))
    if kind is None or not raw.get("id"):
        return None
    details = raw.get("details") or {}
    return _event(kind, raw["id"], raw["time"], raw.get("userId"), {
        "keycloak_type": raw["type"], "user_id": raw.get("userId"), "username": details.get("username"),
        "client_id": raw.get("clientId"), "ip_address": raw.get("ipAddress"), "error": raw.get("error")})


def from_admin_event(raw):
    """An administrator's change to an account (made, changed, removed) or to its roles, or None."""
    match = USER_PATH.match(raw.get("resourcePath") or "")
    if not raw.get("id") or match is None:
        return None
    by = (raw.get("authDetails") or {}).get("userId")
    if raw.get("resourceType") == "REALM_ROLE_MAPPING" and match.group(2):
        try:
            roles = [role["name"] for role in json.loads(raw.get("representation") or "[]")]
        except (ValueError, TypeError, KeyError):
            roles = None
        return _event("identity.role_changed", raw["id"], raw["time"], match.group(1), {
            "keycloak_type": f"{raw['resourceType']} {raw['operationType']}", "user_id": match.group(1),
            "roles": roles, "by": by})
    if raw.get("resourceType") == "USER" and not match.group(2):
        return _event("identity.account_changed", raw["id"], raw["time"], match.group(1), {
            "keycloak_type": f"{raw['resourceType']} {raw['operationType']}", "user_id": match.group(1), "by": by})
    return None


def collect(realm, store, append, since_ms):
    """Reads every user and admin event from where the last read stopped (the cursor in the store, or
    `since_ms` the first time) and appends the new ones. Returns how many were appended."""
    appended = 0
    for source, read, convert in (("user", realm.events, from_user_event),
                                  ("admin", realm.admin_events, from_admin_event)):
        cursor = store.identity_cursor(source)
        cursor = since_ms if cursor is None else cursor
        latest, first = cursor, 0
        while True:
            page = read(cursor, first=first)
            for raw in page:
                latest = max(latest, raw.get("time") or 0)
                # A Keycloak event seen before (the cursor's own millisecond is read again) is skipped here;
                # the ledger's unique event_id would refuse it anyway.
                if not raw.get("id") or store.identity_seen(raw["id"]):
                    continue
                event = convert(raw)
                if event is not None:
                    append(event)
                    appended += 1
                store.mark_identity_seen(raw["id"])
            if len(page) < PAGE:
                break
            first += len(page)
        if latest > cursor:
            store.set_identity_cursor(source, latest)
    return appended
