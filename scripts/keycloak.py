"""Local tooling for the Keycloak realm `ipv` (scripts/stack.sh runs `import`; `make token` runs `token`).

    python scripts/keycloak.py import            # the realm from deploy/keycloak/ (again when a file changed)
    python scripts/keycloak.py token ROLE [SUBJECT]
    python scripts/keycloak.py users              # the demo users, their password and TOTP
    python scripts/keycloak.py admin USER ROLE    # a first officer/auditor/ops (make admin USER= ROLE=)

Local only: it signs in to the master realm as the administrator stack.sh created (password in
var/keycloak/admin-password), and gets people's tokens by the password grant of the local `ipv-cli`
client. Nothing here runs on Kubernetes.
"""
import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pyotp

ROOT = Path(__file__).resolve().parents[1]
REALM_FILE = ROOT / "deploy/keycloak/ipv-realm.json"
LOCAL_FILE = ROOT / "deploy/keycloak/ipv-realm.local.json"
REALM = "ipv"
CLI_CLIENT = "ipv-cli"
ROLES = ("enterprise", "agency", "officer", "auditor", "ops")
STAFF = ("officer", "auditor", "ops")


def _local():
    return json.loads(LOCAL_FILE.read_text())


def demo_users():
    """[(username, role, org, password, totp secret or None)] as kept in ipv-realm.local.json."""
    users = []
    for user in _local()["users"]:
        password = next(c["value"] for c in user["credentials"] if c["type"] == "password")
        otp = next((json.loads(c["secretData"])["value"] for c in user["credentials"] if c["type"] == "otp"), None)
        users.append((user["username"], user["realmRoles"][0], user.get("attributes", {}).get("org", [None])[0],
                      password, otp))
    return users


def totp(secret):
    """Keycloak keys TOTP with the secret's bytes; authenticator apps (and pyotp) take them in base32."""
    return pyotp.TOTP(base32(secret))


def base32(secret):
    return base64.b32encode(secret.encode()).decode().rstrip("=")


class KeycloakError(Exception):
    def __init__(self, status, body):
        super().__init__(f"Keycloak answered {status}: {body}")
        self.status, self.body = status, body


def _request(method, url, *, form=None, body=None, token=None, timeout=30):
    headers = {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None), response.headers
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            # The deny-access step of a flow answers with its login page; its message is the answer.
            text = raw.decode(errors="replace")
            found = re.search(r'id="kc-error-message">\s*<p[^>]*>(.*?)</p>', text, re.S)
            answer = {"error": "access_denied", "error_description": found.group(1).strip() if found else text[:200]}
        raise KeycloakError(exc.code, answer) from None


class Keycloak:
    """The realm's endpoints and the local administrator's calls."""

    def __init__(self, url=None, state_dir=None):
        self.url = (url or os.environ.get("KEYCLOAK_URL") or "").rstrip("/")
        if not self.url:
            sys.exit("KEYCLOAK_URL is not set: start the stack with `make stack` (it writes var/env)")
        self.dir = Path(state_dir or os.environ.get("IPV_KEYCLOAK_DIR") or ROOT / "var/keycloak")
        self._admin_token, self._admin_until = None, 0

    @property
    def token_endpoint(self):
        return f"{self.url}/realms/{REALM}/protocol/openid-connect/token"

    # -- administrator -------------------------------------------------------------------------------
    def admin_token(self):
        if time.monotonic() >= self._admin_until:
            password = (self.dir / "admin-password").read_text().strip()
            _, answer, _ = _request("POST", f"{self.url}/realms/master/protocol/openid-connect/token", form={
                "grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": password})
            self._admin_token = answer["access_token"]
            self._admin_until = time.monotonic() + answer["expires_in"] - 15
        return self._admin_token

    def admin(self, method, path, body=None):
        """A call to the realm's admin API: (status, answer, headers)."""
        return _request(method, f"{self.url}/admin/realms{path}", body=body, token=self.admin_token())

    def user_id(self, username):
        _, found, _ = self.admin("GET", f"/{REALM}/users?exact=true&username={urllib.parse.quote(username)}")
        return found[0]["id"] if found else None

    def create_user(self, username, role, org=None, password=None, otp_secret=None, required_actions=()):
        """A user with one realm role, its `org` and a password (and a TOTP credential); returns its id.
        An existing user of that name is left as it is."""
        user = {"username": username, "enabled": True, "email": f"{username}@local.invalid", "emailVerified": True,
                "attributes": {"org": [org]} if org else {}, "requiredActions": list(required_actions),
                "credentials": [{"type": "password", "value": password or self.local_password(), "temporary": False}]}
        if otp_secret:
            user["credentials"].append({"type": "otp", "userLabel": "local", "secretData": json.dumps({"value": otp_secret}),
                                        "credentialData": json.dumps({"subType": "totp", "digits": 6, "counter": 0,
                                                                      "period": 30, "algorithm": "HmacSHA1"})})
        try:
            _, _, headers = self.admin("POST", f"/{REALM}/users", user)
        except KeycloakError as exc:
            if exc.status != 409:
                raise
            return self.user_id(username)
        uid = headers["Location"].rsplit("/", 1)[1]
        self.set_only_role(uid, role)
        return uid

    def set_only_role(self, uid, role):
        """`role` and not the realm's default roles, whose `enterprise` is for self-registered accounts."""
        _, wanted, _ = self.admin("GET", f"/{REALM}/roles/{role}")
        _, held, _ = self.admin("GET", f"/{REALM}/users/{uid}/role-mappings/realm")
        self.admin("POST", f"/{REALM}/users/{uid}/role-mappings/realm", [wanted])
        others = [r for r in held or [] if r["name"] != role]
        if others:
            self.admin("DELETE", f"/{REALM}/users/{uid}/role-mappings/realm", others)

    def bootstrap_staff(self, username, role, email=None):
        """An officer, auditor or ops account made by the administrator: a one-time password, changed at the
        first sign-in, where the person also sets up TOTP. Returns that password."""
        import secrets
        if role not in STAFF:
            raise ValueError(f"staff roles are {', '.join(STAFF)}")
        password = "Aa1!" + secrets.token_urlsafe(15)
        _, _, headers = self.admin("POST", f"/{REALM}/users", {
            "username": username, "email": email or f"{username}@local.invalid", "enabled": True,
            "requiredActions": ["UPDATE_PASSWORD", "CONFIGURE_TOTP"],
            "credentials": [{"type": "password", "value": password, "temporary": True}]})
        self.set_only_role(headers["Location"].rsplit("/", 1)[1], role)
        return password

    def local_password(self):
        """The password of users made on the fly for local tokens and tests (random per checkout)."""
        path = self.dir / "user-password"
        if not path.exists():
            import secrets
            self.dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text("Aa1!" + secrets.token_urlsafe(18))  # meets the realm's password policy
        return path.read_text().strip()

    # -- the realm as code -----------------------------------------------------------------------------
    def import_realm(self):
        """Creates the realm from deploy/keycloak/ipv-realm.json, plus the local client and demo users;
        when either file changed since the last import, the local realm is made again from them."""
        digest = hashlib.sha256(REALM_FILE.read_bytes() + LOCAL_FILE.read_bytes()).hexdigest()
        stamp = self.dir / "realm.sha256"
        try:
            self.admin("GET", f"/{REALM}")
            exists = True
        except KeycloakError as exc:
            if exc.status != 404:
                raise
            exists = False
        if exists and stamp.exists() and stamp.read_text().strip() == digest:
            print("realm 'ipv' is up to date", file=sys.stderr)
        else:
            if exists:
                print("realm files changed: making the local realm 'ipv' again", file=sys.stderr)
                self.admin("DELETE", f"/{REALM}")
            # Keycloak fills ${IPV_TOOLING_SECRET} from its environment when it imports the file itself
            # (Kubernetes); here the checkout's own random secret goes in.
            realm = REALM_FILE.read_text().replace("${IPV_TOOLING_SECRET}", self.tooling_secret())
            self.admin("POST", "", json.loads(realm.replace("${IPV_PORTAL_READER_SECRET}", self.portal_reader_secret())))
            local = _local()
            local.pop("_comment", None)
            self.admin("POST", f"/{REALM}/partialImport", local)
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "tokens.json").unlink(missing_ok=True)  # signed by the keys of the realm now gone
            stamp.write_text(digest)
            print("realm 'ipv' imported from deploy/keycloak/", file=sys.stderr)

    def tooling_secret(self):
        """The confidential tooling client's secret for this checkout (random, kept in var/keycloak)."""
        path = self.dir / "tooling-secret"
        if not path.exists():
            import secrets
            self.dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def portal_reader_secret(self):
        """The portal reader client's secret (its signed-out pages) for this checkout, made like the tooling
        one; scripts/services.sh hands it to the portal."""
        path = self.dir / "portal-reader-secret"
        if not path.exists():
            import secrets
            self.dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    # -- people's tokens -------------------------------------------------------------------------------
    def password_grant(self, username, password, otp=None, client_id=CLI_CLIENT):
        """The token endpoint's answer for a person's password (and TOTP code)."""
        form = {"grant_type": "password", "client_id": client_id, "username": username, "password": password,
                "scope": "openid"}
        if otp:
            form["totp"] = otp
        _, answer, _ = _request("POST", self.token_endpoint, form=form)
        return answer

    def refresh(self, refresh_token, client_id=CLI_CLIENT):
        _, answer, _ = _request("POST", self.token_endpoint, form={
            "grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token})
        return answer

    def logout(self, refresh_token, client_id=CLI_CLIENT):
        """Ends the session at the realm's end-session endpoint (as signing out does)."""
        _request("POST", f"{self.url}/realms/{REALM}/protocol/openid-connect/logout",
                 form={"client_id": client_id, "refresh_token": refresh_token})

    def sign_in(self, username, password, otp_secret=None):
        """Password grant with the TOTP code of now; a code already used (Keycloak refuses a code twice)
        is followed by the next period's."""
        if not otp_secret:
            return self.password_grant(username, password)
        try:
            return self.password_grant(username, password, totp(otp_secret).now())
        except KeycloakError as exc:
            if exc.status not in (400, 401):
                raise
        generator = totp(otp_secret)
        time.sleep(generator.interval - time.time() % generator.interval + 0.5)
        return self.password_grant(username, password, generator.now())


class Tokens:
    """Access tokens for (role, subject), as `make token` and the tests want them: a demo user when the
    subject is one, else a local user made for it (staff: username = subject; enterprise/agency: org =
    subject). Kept while valid and renewed by the refresh token, so a TOTP code is not spent per token."""

    def __init__(self, keycloak, cache_file=None):
        self.kc = keycloak
        self.cache_file = cache_file
        self.cache = {}
        if cache_file and cache_file.exists():
            try:
                self.cache = json.loads(cache_file.read_text())
            except ValueError:
                self.cache = {}

    def user_for(self, role, subject):
        """(username, password, otp secret) for the role and subject."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        for username, demo_role, org, password, otp in demo_users():
            if demo_role == role and subject in (None, "", username, org):
                return username, password, otp
        if not subject:
            raise ValueError("a subject is required")
        otp = demo_users()[2][4] if role in STAFF else None
        if role in STAFF:
            username, org = subject.lower(), None
        else:
            username, org = f"{role}-{subject}".lower(), subject
        self.kc.create_user(username, role, org=org, otp_secret=otp)
        return username, self.kc.local_password(), otp

    def __call__(self, role, subject=None):
        key = f"{role}:{subject or ''}"
        held = self.cache.get(key)
        now = time.time()
        if held and held["access_until"] - now > 60:
            return held["access_token"]
        answer = None
        if held and held["refresh_until"] - now > 10:
            try:
                answer = self.kc.refresh(held["refresh_token"])
            except KeycloakError:
                answer = None  # a session ended (logout, idle, restart): sign in again
        if answer is None:
            answer = self.kc.sign_in(*self.user_for(role, subject))
        self.cache[key] = {"access_token": answer["access_token"], "refresh_token": answer["refresh_token"],
                           "access_until": now + answer["expires_in"],
                           "refresh_until": now + answer.get("refresh_expires_in", 0)}
        if self.cache_file:
            self.cache_file.touch(mode=0o600)
            self.cache_file.write_text(json.dumps(self.cache))
        return answer["access_token"]


def print_users():
    kc_url = os.environ.get("KEYCLOAK_URL", "http://127.0.0.1:8180")
    print(f"Sign in at {kc_url}/realms/{REALM}/account (or through the portal) as:")
    for username, role, org, password, otp in demo_users():
        line = f"  {role:<10} {username:<16} password {password}"
        if org:
            line += f"   acts for {org}"
        if otp:
            line += f"   TOTP secret {base32(otp)} (code now: {totp(otp).now()})"
        print(line)
    print("Staff (officer, auditor, ops) enter a TOTP code: add the secret to an authenticator app, or\n"
          "  .venv/bin/python -c \"import pyotp; print(pyotp.TOTP('<secret>').now())\"")


def main(argv):
    if not argv or argv[0] not in ("import", "token", "users", "admin"):
        sys.exit(__doc__)
    if argv[0] == "users":
        return print_users()
    kc = Keycloak()
    if argv[0] == "import":
        return kc.import_realm()
    if argv[0] == "admin":
        if len(argv) != 3:
            sys.exit(f"usage: make admin USER=<username> ROLE=<{'|'.join(STAFF)}>")
        try:
            password = kc.bootstrap_staff(argv[1], argv[2])
        except (ValueError, KeycloakError) as exc:
            sys.exit(str(exc))
        print(f"{argv[2]} {argv[1]}: one-time password {password}\n"
              f"Sign in at {kc.url}/realms/{REALM}/account: Keycloak asks for a new password and sets up TOTP.")
        return None
    if len(argv) not in (2, 3):
        sys.exit(f"usage: make token ROLE=<{'|'.join(ROLES)}> [SUBJECT=<id>]")
    tokens = Tokens(kc, cache_file=kc.dir / "tokens.json")
    try:
        print(tokens(argv[1], argv[2] if len(argv) == 3 else None))
    except (ValueError, KeycloakError) as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
