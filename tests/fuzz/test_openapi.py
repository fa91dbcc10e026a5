"""Schemathesis against each service's OpenAPI document, with an admin's token: no
server errors, and every answer's status, content type, headers and body as
documented, for data that fits the document and for data that does not."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.fuzz.conftest import SERVICES, FuzzedSystem, openapi

# Small on purpose: every operation of the three services, both kinds of data, in
# about a minute. A deeper run: PARTSFLOW_TEST_FUZZ_EXAMPLES=500.
EXAMPLES_PER_OPERATION = int(os.environ.get("PARTSFLOW_TEST_FUZZ_EXAMPLES", "12"))


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(headers=headers)

    answers_as_documented()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_answers_as_documented(
    fuzzed: FuzzedSystem, service: str, mode: GenerationMode
) -> None:
    failures = []
    operations = [result.ok() for result in openapi(fuzzed, service).get_all_operations()]
    assert operations, f"{service} documents no operations"
    for operation in operations:
        try:
            fuzz(operation, mode, fuzzed.headers)
        except Unsatisfiable:
            # No request can break this document (a GET with one free-form id): there
            # is no invalid data to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as failure:
            failures.append(f"{operation.label}:\\n{failure}")
    assert not failures, "\\n\\n".join(failures)


@pytest.mark.parametrize("service", SERVICES)
def test_reads_of_things_that_exist_answer_as_documented(
    fuzzed: FuzzedSystem, service: str
) -> None:
    """Generated ids name nothing (404); the seeded ones show the 200 bodies."""
    checked = 0
    for result in openapi(fuzzed, service).get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET":
            continue
        names = [p.name for p in operation.path_parameters]
        case = operation.Case(path_parameters={name: fuzzed.ids[name] for name in names})
        response = case.call_and_validate(headers=fuzzed.headers)
        assert response.status_code == 200, (operation.label, response.text)
        checked += 1
    assert checked >= 2
