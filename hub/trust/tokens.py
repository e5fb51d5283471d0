"""JWT bearer tokens from an external identity provider (OIDC): verified with PyJWT against the
provider's JWKS (a file, or a URL fetched off the event loop and cached), issuer and audience."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jwt

from agenthub.hub.trust.principal import Principal, Role
from agenthub.sdk.errors import ConfigError, Unauthenticated

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


class JwtVerifier:
    """Turns a JWT into a principal: `sub` (or the configured claim) is its name, the role claim its
    role (the strongest one when it is a list), the agent claim the agent an agent token speaks for."""

    def __init__(
        self,
        jwks: str,
        *,
        issuer: str,
        audience: str,
        role_claim: str = "roles",
        agent_claim: str = "agent",
        name_claim: str = "sub",
    ) -> None:
        if not issuer or not audience:
            raise ConfigError("JWT authentication needs an issuer and an audience (jwt_issuer, jwt_audience)")
        self._issuer, self._audience = issuer, audience
        self._role_claim, self._agent_claim, self._name_claim = role_claim, agent_claim, name_claim
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300, timeout=5)
        else:
            try:
                self._keys = jwt.PyJWKSet.from_json(Path(jwks).read_text())
            except (OSError, jwt.PyJWKSetError) as exc:
                raise ConfigError(f"cannot read the JWKS file {jwks!r}: {exc}") from exc

    async def verify(self, token: str) -> Principal:
        """The token's principal; Unauthenticated for an expired, forged or foreign token."""
        try:
            key = await self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iss", "aud", self._name_claim]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return self._principal(claims)

    async def _signing_key(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        if self._client is not None:
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        assert self._keys is not None
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidTokenError("no key of the issuer's key set signed it")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        granted = claims.get(self._role_claim, Role.USER.value)
        roles = {granted} if isinstance(granted, str) else set(granted or ())
        role = next((r for r in Role if r.value in roles), None)
        if role is None:
            raise Unauthenticated(f"the token grants no AgentHub role (claim {self._role_claim!r})")
        agent = str(claims.get(self._agent_claim, "")) if role is Role.AGENT else ""
        if role is Role.AGENT and not agent:
            raise Unauthenticated(f"an agent token names its agent (claim {self._agent_claim!r})")
        return Principal(str(claims[self._name_claim]), role, agent, method="jwt")
