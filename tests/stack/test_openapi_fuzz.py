"""The live gateway (a real stack: `recmesh up`'s processes, a real Redis) against its own OpenAPI document, with
schemathesis: generated valid and invalid requests for every operation, a bounded number each. Every answer must
be a documented status with the documented content type and body schema, and none a 5xx.

    pytest tests/stack/test_openapi_fuzz.py        # < 1 min; FUZZ_EXAMPLES=500 for a longer run
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.stack import LocalStack

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live_schema(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    models = tmp_path_factory.mktemp("fuzz-models")
    shutil.copytree(bundle_path, models / bundle_path.name)
    with LocalStack(models) as stack:
        yield schemathesis.openapi.from_url(f"{stack.http_url}/openapi.json")


def test_every_answer_is_what_the_openapi_document_says(live_schema: schemathesis.BaseSchema) -> None:
    """Each operation, valid and invalid requests (schemathesis' positive and negative modes). Driven by hand
    rather than with ``schemathesis.pytest.from_fixture``, whose lazy parametrization does not run on pytest 9."""
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for result in live_schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,  # a busy test machine is no reason to fail
                derandomize=True,  # the same requests every run: a failure reproduces
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                response = case.call(timeout=15)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:  # no invalid request exists (an operation without parameters or body)
                pass
            except Exception as e:  # every operation is run; all failures are reported together
                failures.append(f"{operation.label} ({mode.value}): {e}")
    print(f"\nschemathesis: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert not [status for status in statuses if status >= 500], statuses
