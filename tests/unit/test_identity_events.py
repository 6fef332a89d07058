"""Keycloak's events as ledger events (services/audit/identity.py): which kinds are kept, what they say,
and that a typed username the text rule refuses cannot stop the trail."""
import json

from ipvkit.events import parse
from services.audit.identity import from_admin_event, from_user_event


def login_error(username):
    return {"id": "kc-1", "time": 1796241865012, "type": "LOGIN_ERROR", "clientId": "ipv-portal",
            "userId": None, "ipAddress": "127.0.0.1", "error": "user_not_found",
            "details": {"username": username, "auth_method": "openid-connect"}}


def test_a_failed_sign_in_is_kept_with_its_reason_and_one_id_however_often_it_is_read():
    first, again = from_user_event(login_error("li.wei")), from_user_event(login_error("li.wei"))
    assert first["type"] == "identity.sign_in_failed" and first["producer"] == "identity"
    assert first["event_id"] == again["event_id"]
    assert first["data"]["error"] == "user_not_found" and first["data"]["username"] == "li.wei"
    assert first["occurred_at"].startswith("2026-12-02T")
    parse(json.dumps(first))  # a valid envelope


def test_a_typed_username_with_controls_or_bidi_overrides_is_kept_defused():
    event = from_user_event(login_error("adm\u202ein\x00"))
    assert event["data"]["username"] == "adm\ufffdin\ufffd"
    parse(json.dumps(event))


def test_routine_token_events_are_not_kept():
    assert from_user_event(dict(login_error("x"), type="REFRESH_TOKEN")) is None
    assert from_user_event(dict(login_error("x"), type="CODE_TO_TOKEN")) is None


def test_role_changes_name_the_roles_the_account_and_who_changed_them():
    event = from_admin_event({
        "id": "kc-2", "time": 1796241865611, "operationType": "CREATE", "resourceType": "REALM_ROLE_MAPPING",
        "resourcePath": "users/u-1/role-mappings/realm", "authDetails": {"userId": "admin-1"},
        "representation": json.dumps([{"name": "officer"}])})
    assert event["type"] == "identity.role_changed"
    assert (event["data"]["user_id"], event["data"]["roles"], event["data"]["by"]) == ("u-1", ["officer"], "admin-1")
    assert from_admin_event({"id": "kc-3", "time": 1, "operationType": "UPDATE", "resourceType": "CLIENT",
                             "resourcePath": "clients/c-1"}) is None
