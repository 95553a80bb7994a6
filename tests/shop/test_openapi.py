"""The shop's OpenAPI document tells the truth: every status, body and header it answers.

schemathesis generates requests from the document (valid and invalid ones, per
operation, then chains of them) and checks every response against it, with all its
checks: no 5xx, only documented statuses, content types, headers and bodies, invalid
data refused, valid data accepted, auth not ignored, ... It runs as its CLI in another
process, against the shop served over real HTTP on the live services: the same as
pointing it at a deployment. The run is bounded by schemathesis' own option
(``--max-examples`` per operation and per stateful run), not by a timed assertion; its
``--max-time`` is not used: it makes fuzzing repeat until the time is spent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit.shop.app import ERROR_RESPONSES, ShopServer
from labkit.shop.testing import add_user, auth_header, client_for

# Enough to reach every operation's valid and invalid inputs and the stateful chains,
# in well under a minute on 2 busy cores (see the figure the test prints).
MAX_EXAMPLES = 40
SEED = 14  # a failure reproduces with the same seed; change it to explore further
HANG_GUARD_S = 300  # only if schemathesis itself hangs; the run ends at MAX_EXAMPLES


def schemathesis(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", *args],
        check=False,  # the test reads its output
        capture_output=True,
        text=True,
        cwd=cwd,  # its report folder and example database go to tmp_path
        timeout=HANG_GUARD_S,
    )


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_all_checks(
    make_shop_app, shop_clean, shop_session, tmp_path
):
    # Its own app: a per-client login limit high enough that schemathesis' many wrong
    # passwords do not lock it out (the 429 is documented and checked all the same).
    app = make_shop_app(login_max_failures_per_client=10_000)
    user = add_user(shop_session, email="schemathesis@example.com", name="Schemathesis")
    (token,) = auth_header(app.state.shop.settings, user.id).values()

    with ShopServer(app) as server:
        run = schemathesis(
            f"{server.url}/openapi.json",
            "--checks=all",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            "--workers=1",
            "--request-timeout=10",
            "--generation-database=none",
            f"--header=Authorization: {token}",
            "--no-color",
            cwd=tmp_path,
        )

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    assert "No issues found" in output, output[-20_000:]
    print(output[output.find("SUMMARY") :])  # phases, operations, cases and time (with -s)


def test_every_route_documents_its_error_statuses(shop_app):
    document = client_for(shop_app).get("/openapi.json").json()
    statuses = {
        f"{method.upper()} {path}": set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }

    assert statuses["POST /api/tokens"] >= {"200", "401", "422", "429", "503"}
    assert statuses["PATCH /api/users/{user_id}"] >= {"401", "403", "404", "409", "422", "503"}
    assert statuses["POST /api/orders"] >= {"401", "402", "409", "422", "503"}
    assert statuses["POST /graphql"] == {"200", "400", "401", "413"}
    assert all("503" in s for operation, s in statuses.items() if "/graphql" not in operation)
    error_schema = document["components"]["schemas"]["ErrorBody"]
    assert error_schema["required"] == ["error"]
    too_many = document["paths"]["/api/tokens"]["post"]["responses"]["429"]
    assert "Retry-After" in too_many["headers"]
    assert set(ERROR_RESPONSES) >= {401, 403, 404, 409, 422, 429, 503}


def test_graphiql_is_served_only_when_configured(make_shop_app):
    plain = client_for(make_shop_app())
    with_ide = client_for(make_shop_app(graphql_ide=True))

    refused = plain.get("/graphql")
    assert refused.status_code == 405 and refused.headers["Allow"] == "POST"
    assert refused.json()["error"] == "METHOD_NOT_ALLOWED"
    assert list(plain.get("/openapi.json").json()["paths"]["/graphql"]) == ["post"]
    page = with_ide.get("/graphql")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    documented = with_ide.get("/openapi.json").json()["paths"]["/graphql"]["get"]
    assert list(documented["responses"]["200"]["content"]) == ["text/html"]
    # Queries come by POST only, where the body limit counts them.
    by_get = with_ide.get("/graphql", params={"query": "{ __typename }"})
    assert by_get.status_code == 400 and "not allowed" in by_get.text


def test_a_bad_token_on_graphql_is_401_not_500(shop_client):
    response = shop_client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Bearer x"}
    )

    assert response.status_code == 401, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "invalid token" in error["message"] and "POST /api/tokens" in error["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff\xfe{", "not JSON in UTF-8"),
        (b"5", "must be a JSON object"),
        (b'{"query": "{ __typename }", "operationName": true}', "operationName must be"),
    ],
)
def test_a_malformed_graphql_request_is_400_saying_what_is_wrong(shop_client, body, expected):
    # Each of these was a 500 from inside strawberry, or went through unchecked.
    response = shop_client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert expected in response.text


def test_a_body_that_is_not_utf8_is_400_in_the_shop_s_shape(shop_client):
    response = shop_client.post(
        "/api/tokens", content=b"\x80{", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "BAD_REQUEST"
