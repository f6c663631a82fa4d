"""Property-based requests generated from the service's own OpenAPI schema (schemathesis), sent over real HTTP to
`stepwise serve` on loopback: whatever a client sends, the answer is never a 500, and it conforms to the schema
(status codes, content types, bodies), with and without a valid token."""

from __future__ import annotations

import tempfile

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from stepwise.api.app import create_app
from stepwise.api.settings import ServiceSettings
from tests.api.conftest import TOKEN

# the schema the server publishes, built at collection time from the same app `stepwise serve` runs; the requests
# go over HTTP to the real server of the `server` fixture
with tempfile.TemporaryDirectory() as _folder:
    schema = schemathesis.openapi.from_dict(create_app(ServiceSettings(corpus=_folder, api_token=TOKEN)).openapi())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_from_the_schema_gets_a_500_or_breaks_the_schema(case, server):
    # every check but one: a request the schema allows may still be refused on its meaning (SQL that does not
    # parse, a dataset path that does not exist on the server), and that must be a 4xx, which the other checks see
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                           excluded_checks=[positive_data_acceptance])


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_without_the_token_nothing_gets_a_500(case, server):
    response = case.call(base_url=server.url, headers={"Authorization": "Bearer not-the-token"})
    if case.path == "/healthz":  # open: answers, or refuses a bad method or parameter
        assert response.status_code in {200, 405, 422}, (case.method, response.status_code)
    else:  # refused before anything is read: whatever the method, parameters or body
        assert response.status_code == 401, (case.method, case.path, response.status_code)
