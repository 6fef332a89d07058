"""Signing in and out (Keycloak), the language switch, and where a person starts."""
from urllib.parse import urlencode, urlparse

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from services.portal import signin
from services.portal.app import LANGUAGE_COOKIE, LANGUAGES

bp = Blueprint("account", __name__)
HOMES = {"enterprise": "enterprise.home", "agency": "agency.home", "officer": "officer.home",
         "auditor": "auditor.home", "ops": "account.ops"}


def safe_next(target):
    """Only a path on this site: a sign-in link must not send the person elsewhere afterwards."""
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def callback_url():
    return current_app.config["PUBLIC_URL"].rstrip("/") + url_for("account.signed_in")


@bp.route("/sign-in")
def sign_in():
    if request.args.get("go") != "1":
        # One page first, so the person knows where they are going and why (and sees that a session ended).
        return render_template("account/sign_in.html", ended=request.args.get("ended") == "1",
                               next=safe_next(request.args.get("next")))
    session["after_sign_in"] = safe_next(request.args.get("next"))
    kc_locale = "zh-CN" if request.cookies.get(LANGUAGE_COOKIE, "zh") == "zh" else "en"
    return signin.keycloak().authorize_redirect(callback_url(), ui_locales=kc_locale)


@bp.route("/signed-in")
def signed_in():
    if "error" in request.args:
        return render_template("account/sign_in.html", ended=False, next=None, refused=True), 400
    target = session.get("after_sign_in")
    token = signin.keycloak().authorize_access_token()
    person = signin.start_session(token)
    if person["role"] is None:
        session.clear()
        return render_template("errors/403.html", message="no_role"), 403
    return redirect(target or url_for(HOMES[person["role"]]))


@bp.route("/sign-out", methods=["POST"])
def sign_out():
    id_token = (session.get("tokens") or {}).get("id_token")
    session.clear()
    done = current_app.config["PUBLIC_URL"].rstrip("/") + url_for("account.signed_out")
    if not (id_token and current_app.config["OIDC_ISSUER"]):
        return redirect(done)
    end = signin.keycloak().load_server_metadata()["end_session_endpoint"]
    return redirect(end + "?" + urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": done,
                                           "client_id": current_app.config["CLIENT_ID"]}))


@bp.route("/signed-out")
def signed_out():
    return render_template("account/signed_out.html")


@bp.route("/language/<code>")
def language(code):
    response = redirect(safe_next(request.args.get("next")) or url_for("public.programmes"))
    if code in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, code, max_age=365 * 86400, samesite="Lax", httponly=True,
                            secure=current_app.config["PREFERRED_URL_SCHEME"] == "https")
    return response


@bp.route("/ops")
@signin.person_required("ops")
def ops():
    return render_template("account/ops.html")
