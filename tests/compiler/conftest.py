"""Compiler test helpers: the bundled flows, and the providers' specs as oracles."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog

# The parts of the carriers' OpenAPI documents the tests use (tests/specs/trim.py cuts them).
SPECS = Path(__file__).resolve().parents[1] / "specs"
TELNYX_SPEC = SPECS / "telnyx.json"
PROVIDERS = ("twilio", "plivo", "telnyx")


@cache
def bundled() -> dict[str, m.Flow]:
    return {e.name: e.flow for e in Catalog()}


@pytest.fixture(scope="session")
def flows() -> dict[str, m.Flow]:
    return bundled()


@cache
def _telnyx() -> tuple[dict[str, Any], Registry[Any]]:
    spec = json.loads(TELNYX_SPEC.read_text("utf-8"))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return spec, Registry().with_resource("urn:telnyx", resource)


def telnyx_validator(command: str) -> Draft202012Validator:
    """A validator for the request body of POST /calls/{id}/actions/{command}."""
    spec, registry = _telnyx()
    op = spec["paths"][f"/calls/{{call_control_id}}/actions/{command}"]["post"]
    body = op["requestBody"]
    if "$ref" in body:
        name = body["$ref"].rsplit("/", 1)[-1]
        body = spec["components"]["requestBodies"][name]
    schema = body["content"]["application/json"]["schema"]
    ref = schema.get("$ref")
    root = {"$ref": "urn:telnyx" + ref} if ref else schema
    return Draft202012Validator(root, registry=registry)
