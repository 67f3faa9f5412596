"""Every backend error pickles with its fields; HTTP statuses map to the right type."""

from __future__ import annotations

import pickle

import httpx
import pytest
from ray import cloudpickle

from synapse_ray.backend import errors as E
from synapse_ray.backend.policy import backoff_delay, error_from_response, parse_retry_after
from synapse_ray.errors import SynapseRayError

ALL_ERRORS = [getattr(E, name) for name in E.__all__]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_round_trips_through_pickle(cls: type[E.BackendError]) -> None:
    err = cls("boom", status=503, url="http://h/x/", method="GET", errors={"name": ["bad"]})
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(err))
        assert type(again) is cls
        assert str(again) == "boom"
        assert (again.status, again.url, again.method) == (503, "http://h/x/", "GET")
        assert again.errors == {"name": ["bad"]}
    assert issubclass(cls, E.BackendError) and issubclass(cls, SynapseRayError)


def test_defaults_when_fields_missing() -> None:
    err = pickle.loads(pickle.dumps(E.RateLimitError("slow down")))
    assert err.retry_after is None and err.status is None


def _response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://h/things/1/")
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    "status,cls",
    [
        (401, E.AuthenticationError),
        (403, E.PermissionDeniedError),
        (404, E.NotFoundError),
        (400, E.BackendValidationError),
        (422, E.BackendValidationError),
        (409, E.ConflictError),
        (429, E.RateLimitError),
        (500, E.ServerError),
        (503, E.ServerError),
        (418, E.BackendError),
    ],
)
def test_status_maps_to_error_type(status: int, cls: type[E.BackendError]) -> None:
    err = error_from_response(_response(status, {"detail": "nope"}))
    assert type(err) is cls
    assert err.status == status and err.url == "http://h/things/1/" and err.method == "GET"
    assert "nope" in str(err)


def test_validation_error_carries_field_messages() -> None:
    err = error_from_response(_response(400, {"name": ["This field is required."]}))
    assert isinstance(err, E.BackendValidationError)
    assert err.errors == {"name": ["This field is required."]}
    assert "name: This field is required." in str(err)


def test_not_found_names_the_resource() -> None:
    err = error_from_response(_response(404, {"detail": "x"}), resource="data collection 7")
    assert isinstance(err, E.NotFoundError)
    assert "data collection 7" in str(err) and err.resource == "data collection 7"


def test_secret_echoed_by_a_server_is_scrubbed() -> None:
    err = error_from_response(_response(401, {"detail": "bad token abc123"}), secret="abc123")
    assert "abc123" not in str(err)
    assert "SYNAPSE_ACCESS_TOKEN" in str(err)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=0.0) == 120.0  # capped
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:03 GMT", now=1.0) == pytest.approx(2.0)
    err = error_from_response(_response(429, {"detail": "x"}, {"Retry-After": "3"}))
    assert isinstance(err, E.RateLimitError) and err.retry_after == 3.0


def test_backoff_grows_and_is_capped() -> None:
    assert 0.4 <= backoff_delay(0.5, 0) <= 0.6
    assert 1.6 <= backoff_delay(0.5, 2) <= 2.4
    assert backoff_delay(0.5, 30) == 30.0  # the cap holds after the jitter
