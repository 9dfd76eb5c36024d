"""herald_client - Herald's Python client for backends.

    from herald_client import Herald, AsyncHerald, mint_token

Sync (standard library only) and asyncio clients for the REST API (publish,
broadcast, channel members, presence, history, disconnect, delete user),
typed exceptions for problem+json errors, retries with exponential backoff
and jitter, and JWT minting (HS* with the standard library; RS256/ES256 with
PyJWT or cryptography). herald_client.proxy answers Herald's backend proxy
calls (connect, refresh, subscribe, publish, rpc) from Django or FastAPI.
"""

from .aio import AsyncHerald
from .client import Herald
from .errors import (BadRequest, Conflict, ConnectionFailed, ConnectionLost, Forbidden,
                     HeraldError, NotFound, PayloadTooLarge, RateLimited, ServerError,
                     Unauthorized, Unavailable, ValidationError)
from .tokens import mint_token

__version__ = "0.1.0"
__all__ = ["Herald", "AsyncHerald", "mint_token", "HeraldError", "BadRequest", "Unauthorized",
           "Forbidden", "NotFound", "Conflict", "PayloadTooLarge", "ValidationError",
           "RateLimited", "ServerError", "Unavailable", "ConnectionFailed", "ConnectionLost"]
