"""A learner's kernel telling the room's board how a `%%check` went.

Standard library only, and nothing else of labkit: `labkit.exercises` calls `report`
after every check, so this must cost nothing where no board runs and must never make a
learner's cell fail or print red where the board is down or slow.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

URL_ENV = "LABKIT_CLASSROOM_URL"
TOKEN_ENV = "LABKIT_CLASSROOM_TOKEN"
OUTCOMES = ("solved", "wrong", "not attempted")
# A check's result reaches the board within this, or is dropped: the learner's cell
# waits for it, and a board that is down must not slow their work.
REPORT_TIMEOUT_SECONDS = 2.0


def report(lesson: str, exercise: str, outcome: str, seconds: float | None = None,
           url: str | None = None, token: str | None = None) -> str | None:
    """POST one check's outcome to the board at LABKIT_CLASSROOM_URL as the learner of
    LABKIT_CLASSROOM_TOKEN; returns None when it arrived (or no board is set), else one
    calm line saying why it did not.

    The body is ``{"lesson", "exercise", "outcome", "seconds"}``; the learner is not in
    it: the board finds them from the bearer token, so a learner can only write their
    own rows.
    """
    url = url or os.environ.get(URL_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if not url or not token:
        return None
    if outcome not in OUTCOMES:
        raise ValueError(f"an outcome is one of {', '.join(OUTCOMES)}; got {outcome!r}")
    body = json.dumps({"lesson": lesson, "exercise": exercise, "outcome": outcome,
                       "seconds": seconds}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/progress", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REPORT_TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError as exc:
        return f"the trainer's board did not take this result (HTTP {exc.code}); your work is fine"
    except (OSError, ValueError) as exc:
        return f"the trainer's board did not answer ({type(exc).__name__}); your work is fine"
