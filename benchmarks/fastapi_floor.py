"""The floor under the shop's cached profile read: FastAPI with the same route shape, no work.

``GET /api/users/{user_id}/profile`` here has the shop route's dependencies — the app's
state from an async dependency, an HTTPBearer scheme, an async dependency that turns the
token into a user id (a dict lookup, as the shop's remembered tokens are), a UUID path
parameter — and answers a profile-sized JSON body held in memory: no Redis, no JSON
decoding, no viewer filtering. What it costs per request is what FastAPI and uvicorn cost
this machine for that route; `shop_speed.py` serves it beside the shop (uvicorn,
``fastapi_floor:app``) and prints the two side by side.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN = "floor-token"
USER = uuid.UUID(int=1)
PROFILE = {
    "user": {"id": str(USER), "email": "floor@example.com", "name": "Floor"},
    "stats": {"postsCount": 0, "followersCount": 0, "followingCount": 0},
    "recentActivity": [],
}

app = FastAPI(title="FastAPI floor")
app.state.tokens = {TOKEN: USER}
_bearer = HTTPBearer(auto_error=False)


async def get_state(request: Request) -> dict[str, uuid.UUID]:
    return request.app.state.tokens


async def current_user_id(
    tokens: Annotated[dict[str, uuid.UUID], Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    if credentials is None or credentials.credentials not in tokens:
        raise HTTPException(401)
    return tokens[credentials.credentials]


@app.get("/api/users/{user_id}/profile")
async def profile(
    user_id: uuid.UUID,
    viewer: Annotated[uuid.UUID, Depends(current_user_id)],
    tokens: Annotated[dict[str, uuid.UUID], Depends(get_state)],
) -> JSONResponse:
    return JSONResponse(PROFILE, headers={"X-Cache": "HIT"})
