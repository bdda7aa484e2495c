"""Bearer tokens with a role and plant scopes. Tokens are kept only as SHA-256 digests in memory."""

import hashlib
from dataclasses import dataclass

from fastapi import HTTPException, Request

from cems.config import PlantConfig, TokenConfig

READ_ROLES = frozenset({"operator", "regulator", "admin"})
FUEL_ROLES = frozenset({"operator", "admin"})
REPORT_ROLES = frozenset({"regulator", "admin"})


@dataclass(frozen=True)
class Principal:
    role: str
    plants: frozenset[str]
    name: str

    def may_see(self, plant: str) -> bool:
        return "*" in self.plants or plant in self.plants


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, tokens: list[TokenConfig]):
        self._by_digest = {
            _digest(t.token): Principal(t.role, frozenset(t.plants), t.name or f"{t.role}#{i}")
            for i, t in enumerate(tokens)
        }

    def lookup(self, token: str) -> Principal | None:
        return self._by_digest.get(_digest(token))


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    p = request.app.state.tokens.lookup(token.strip())
    if p is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return p


def reader(request: Request) -> Principal:
    p = principal(request)
    if p.role not in READ_ROLES:
        raise HTTPException(403, f"role {p.role!r} may not read figures")
    return p


def _role(request: Request, roles: frozenset[str], what: str) -> Principal:
    p = principal(request)
    if p.role not in roles:
        raise HTTPException(403, f"role {p.role!r} may not {what} ({' or '.join(sorted(roles))} only)")
    return p


def operator(request: Request) -> Principal:
    """The caller, if its role may submit fuel data (operator, admin); 401/403 otherwise."""
    return _role(request, FUEL_ROLES, "submit fuel data")


def allowance_setter(request: Request) -> Principal:
    """The caller, if its role may set a plant's allowances (operator, admin); 401/403 otherwise."""
    return _role(request, FUEL_ROLES, "set allowances")


def report_reader(request: Request) -> Principal:
    """The caller, if its role may pull reconciled reports (regulator, admin); 401/403 otherwise."""
    return _role(request, REPORT_ROLES, "pull reconciled reports")


def visible_plant(request: Request, who: Principal, plant: str) -> PlantConfig:
    """The plant's config: 403 outside the token's scope, 404 if there is no such plant."""
    if not who.may_see(plant):
        raise HTTPException(403, f"token may not see plant {plant!r}")
    p = request.app.state.cfg.plant(plant)
    if p is None:
        raise HTTPException(404, f"no plant {plant!r}")
    return p
