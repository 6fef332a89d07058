"""The portal: server-rendered pages over the platform's own public API. It owns no business data and
reaches no other service's database or RPC; its only state is sessions.

    gunicorn --config services/portal/gunicorn.conf.py "services.portal.app:create_app()"
"""
import os
import secrets
from pathlib import Path

from flask import Flask, g, render_template, request, send_from_directory
from flask_babel import Babel
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from ipvkit.config import load
from services.portal import formatting, signin
from services.portal.clients import ApiError, ApiUnavailable, SignInNeeded
from services.portal.sessions import ServerSideSessions, SessionStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LANGUAGES = {"zh": "中文", "en": "English"}
DEFAULT_LANGUAGE = "zh"
LANGUAGE_COOKIE = "ipv_lang"
# What the browser may load: only the portal's own files (no inline script or style, no other origin);
# forms may also lead to the realm (sign-out goes on to Keycloak's end-session page).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' {realm}")


def secret_key(config):
    if config.get("SECRET_KEY"):
        return config["SECRET_KEY"]
    path = Path(config["SECRET_KEY_FILE"])
    path = path if path.is_absolute() else ROOT / path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def choose_language():
    wanted = request.cookies.get(LANGUAGE_COOKIE)
    return wanted if wanted in LANGUAGES else DEFAULT_LANGUAGE


def create_app(**overrides):
    config = load(HERE / "config.yaml", **overrides)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(config)
    app.config.update(
        SECRET_KEY=secret_key(config), PREFERRED_URL_SCHEME=config["PUBLIC_URL"].split(":", 1)[0],
        BABEL_DEFAULT_LOCALE=DEFAULT_LANGUAGE, BABEL_TRANSLATION_DIRECTORIES=str(HERE / "translations"),
        MAX_CONTENT_LENGTH=25 * 1024 * 1024, WTF_CSRF_TIME_LIMIT=None, TEMPLATES_AUTO_RELOAD=False)
    app.session_interface = ServerSideSessions(SessionStore(config["MONGO_URI"], config["MONGO_DB"]),
                                               int(config["IDLE_TIMEOUT_S"]))
    CSRFProtect(app)
    Babel(app, locale_selector=choose_language)
    formatting.register(app)
    signin.init_app(app)
    realm = config["OIDC_ISSUER"].split("/realms/")[0] if config["OIDC_ISSUER"] else ""
    csp = CSP.format(realm=realm).strip()
    assets = Path(config["ASSETS_DIR"])
    assets = assets if assets.is_absolute() else ROOT / assets

    from services.portal.views import account, agency, auditor, documents, enterprise, officer, public
    for module in (public, account, enterprise, agency, officer, auditor, documents):
        app.register_blueprint(module.bp)

    @app.route("/assets/<path:name>")
    def vendor(name):
        """The npm-installed libraries (scripts/install.sh), only the files a page loads."""
        allowed = {"htmx.min.js": "htmx.org/dist/htmx.min.js", "echarts.min.js": "echarts/dist/echarts.min.js",
                   "axe.min.js": "axe-core/axe.min.js"}
        if name not in allowed:
            return render_error(404)
        folder, _, file = allowed[name].rpartition("/")
        return send_from_directory(assets / folder, file, max_age=86400)

    @app.route("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.context_processor
    def page_globals():
        return {"languages": LANGUAGES, "language": choose_language(), "person": g.get("person") or
                signin.current_person()}

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if response.mimetype == "text/html":
            response.headers["Cache-Control"] = "no-store"
        return response

    def render_error(status, message=None):
        return render_template(f"errors/{status}.html", message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render_error(400, "csrf")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        status = exc.code if exc.code in (400, 403, 404, 503) else (404 if exc.code == 405 else 400)
        return render_error(status, exc.description if status == 503 else None)

    @app.errorhandler(SignInNeeded)
    def sign_in_again(exc):
        from flask import redirect, session, url_for
        session.clear()
        return redirect(url_for("account.sign_in", ended="1"))

    @app.errorhandler(ApiError)
    def api_error(exc):
        if exc.status in (403, 404):
            return render_error(exc.status)
        app.logger.error("API answered %s: %s", exc.status, exc.body)
        return render_error(503 if isinstance(exc, ApiUnavailable) else 500)

    @app.errorhandler(Exception)
    def unexpected(exc):
        app.logger.exception("unexpected error")
        return render_error(500)

    return app
