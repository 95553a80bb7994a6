"""Joining a room from a laptop: a token holding one learner's own environment.

The trainer prints a token per learner (`labkit classroom token alice`); the learner
runs `labkit join TOKEN` (or `labkit join URL`, a board page that answers with it), and
every labkit process of their project then uses the room's servers as that learner.
A token holds only that learner's credentials and board token, nothing of the room's
admin access: whoever has it is that learner, as with a password.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.request
from typing import Any

from labkit import services
from labkit.classroom._room import ClassroomError, Learner, validate_name

TOKEN_PREFIX = "lkj1."
FETCH_TIMEOUT_SECONDS = 10


def join_token(room: str, learner: Learner) -> str:
    """The token `labkit join` takes: the learner's environment, base64url-encoded."""
    payload = {"room": room, "learner": learner.name, "env": learner.env}
    return TOKEN_PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def read_join_token(token_or_url: str) -> dict[str, Any]:
    """{"room", "learner", "env"} from a token, or from the board URL that serves one."""
    text = token_or_url.strip()
    if text.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(text, timeout=FETCH_TIMEOUT_SECONDS) as response:
                text = response.read().decode().strip()
        except (OSError, ValueError) as exc:
            raise ClassroomError(f"could not fetch a join token from {text}: {exc}. Ask the "
                                 "trainer for your token and run `labkit join TOKEN`") from None
    if not text.startswith(TOKEN_PREFIX):
        raise ClassroomError(f"a join token starts with {TOKEN_PREFIX!r}; got "
                             f"{text[:12]!r}…: copy the whole token the trainer gave you")
    try:
        payload = json.loads(base64.urlsafe_b64decode(text[len(TOKEN_PREFIX):].encode()))
        room, learner, env = payload["room"], payload["learner"], payload["env"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise ClassroomError("this join token is damaged (cut short when copied?): copy "
                             "the whole token the trainer gave you") from None
    validate_name(learner)
    if not isinstance(env, dict) or not all(isinstance(k, str) and k.startswith(ALLOWED)
                                            and isinstance(v, str) for k, v in env.items()):
        raise ClassroomError("this join token holds variables a room does not give; ask "
                             "the trainer for a new one")
    return {"room": str(room), "learner": learner, "env": env}


# What a room's token may set: the learner's service URLs and the names other tools
# read, never anything that changes how labkit runs beyond which servers it uses.
ALLOWED = ("LABKIT_POSTGRES_", "LABKIT_REDIS_", "LABKIT_RABBITMQ_", "LABKIT_AWS_",
           "LABKIT_CLASSROOM_", "DATABASE_URL", "PG", "REDIS_URL", "AMQP_URL", "AWS_")


def save_join(token_or_url: str) -> dict[str, Any]:
    """Join the room in the token: recorded in this project's state dir for its kernels."""
    joined = read_join_token(token_or_url)
    if any(key.endswith("_ADMIN_URL") for key in joined["env"]):
        raise ClassroomError("this join token carries admin URLs, which a learner must "
                             "never hold: ask the trainer for a new one")
    services.write_joined(joined["room"], joined["learner"], joined["env"])
    return joined


def joined() -> dict[str, Any] | None:
    """The room this project joined, or None."""
    return services.read_joined()


def leave() -> bool:
    """Forget the joined room; True if there was one."""
    return services.forget_joined()
