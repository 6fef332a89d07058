"""Signed bearer tokens carrying a role and a subject (the id of the enterprise, agency or person)."""
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from ipvkit.errors import Forbidden, Unauthorized

ROLES = ("enterprise", "agency", "officer", "auditor", "ops")
ALGORITHM = "HS256"
ISSUER = "ipv-vouchers"


@dataclass(frozen=True)
class Principal:
    role: str
    id: str

    def as_actor(self):
        return {"role": self.role, "id": self.id}


SYSTEM = Principal("system", "system")


def issue_token(secret, role, subject, ttl=timedelta(hours=12), now=None):
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not subject:
        raise ValueError("a subject is required")
    now = now or datetime.now(timezone.utc)
    claims = {"iss": ISSUER, "sub": str(subject), "role": role, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def principal_from_header(secret, header):
    if not header:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "sub", "iss"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired")
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}")
    role = claims.get("role")
    if role not in ROLES:
        raise Unauthorized("token has no known role")
    return Principal(role, claims["sub"])


def require_role(principal, *roles):
    if principal.role not in roles:
        raise Forbidden(f"role {principal.role!r} may not do this; needs one of: {', '.join(roles)}")


def main(argv=None):
    """`python -m ipvkit.auth ROLE SUBJECT`: prints a token signed with $AUTH_SECRET."""
    import os
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit(f"usage: python -m ipvkit.auth ROLE SUBJECT   (roles: {', '.join(ROLES)})")
    secret = os.environ.get("AUTH_SECRET")
    if not secret:
        sys.exit("AUTH_SECRET is not set (make token sets it from var/auth_secret)")
    try:
        print(issue_token(secret, args[0], args[1]))
    except ValueError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
