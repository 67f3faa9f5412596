"""BackendSpec: validation, env loading, pickling, and that the token stays hidden."""

from __future__ import annotations

import pickle

import pytest
from pydantic import SecretStr, ValidationError
from ray import cloudpickle

from synapse_ray.backend import BackendSpec
from synapse_ray.backend.spec import DEFAULT_CHUNK_SIZE

TOKEN = "s3cr3t-token-value"


def test_defaults_and_trailing_slash() -> None:
    spec = BackendSpec(base_url="http://127.0.0.1:8765")
    assert spec.base_url == "http://127.0.0.1:8765/"
    assert spec.token is None and spec.tenant is None
    assert (spec.connect_timeout, spec.read_timeout) == (5.0, 60.0)
    assert (spec.max_retries, spec.backoff, spec.chunk_size) == (3, 0.5, DEFAULT_CHUNK_SIZE)
    assert DEFAULT_CHUNK_SIZE == 50 * 1024 * 1024  # as upstream synapse-sdk
    assert BackendSpec(base_url="https://h/api/").base_url == "https://h/api/"


@pytest.mark.parametrize("bad", ["localhost:8000", "127.0.0.1:8765/", "ftp://h/", "http://", ""])
def test_url_without_http_scheme_is_a_clear_value_error(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        BackendSpec(base_url=bad)
    assert isinstance(info.value, ValidationError)
    text = str(info.value)
    assert "base_url" in text
    assert repr(bad) in text


def test_frozen() -> None:
    spec = BackendSpec(base_url="http://h/")
    with pytest.raises(ValidationError):
        spec.base_url = "http://other/"  # type: ignore[misc]


def test_from_env() -> None:
    assert BackendSpec.from_env({}) is None
    assert BackendSpec.from_env({"SYNAPSE_HOST": "  "}) is None
    spec = BackendSpec.from_env(
        {"SYNAPSE_HOST": "http://h:1", "SYNAPSE_ACCESS_TOKEN": TOKEN, "SYNAPSE_TENANT": "acme"}
    )
    assert spec is not None
    assert spec.base_url == "http://h:1/"
    assert spec.token is not None and spec.token.get_secret_value() == TOKEN
    assert spec.tenant == "acme"
    bare = BackendSpec.from_env({"SYNAPSE_HOST": "http://h:1", "SYNAPSE_ACCESS_TOKEN": ""})
    assert bare is not None and bare.token is None and bare.tenant is None


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNAPSE_HOST", "http://example.invalid:9/")
    monkeypatch.setenv("SYNAPSE_ACCESS_TOKEN", TOKEN)
    spec = BackendSpec.from_env()
    assert spec is not None and spec.base_url == "http://example.invalid:9/"
    monkeypatch.delenv("SYNAPSE_HOST")
    assert BackendSpec.from_env() is None


def test_headers() -> None:
    spec = BackendSpec(base_url="http://h/", token=SecretStr(TOKEN), tenant="acme")
    assert spec.headers() == {"Synapse-Access-Token": f"Token {TOKEN}", "Synapse-Tenant": "acme"}
    assert BackendSpec(base_url="http://h/").headers() == {}
    timeout = spec.timeout()
    assert (timeout.connect, timeout.read) == (5.0, 60.0)


@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)])
def test_pickle_round_trip(dumps, loads) -> None:  # type: ignore[no-untyped-def]
    spec = BackendSpec(base_url="http://h:1", token=TOKEN, tenant="t", chunk_size=1024, max_retries=1)
    again = loads(dumps(spec))
    assert again == spec
    assert hash(again) == hash(spec)
    assert again.token is not None and again.token.get_secret_value() == TOKEN


def test_repr_str_and_json_hide_the_token() -> None:
    spec = BackendSpec(base_url="http://h:1", token=TOKEN)
    for text in (repr(spec), str(spec), spec.model_dump_json(), repr(spec.model_dump())):
        assert TOKEN not in text
    assert "**********" in repr(spec)


def test_model_copy_validates_updates() -> None:
    spec = BackendSpec(base_url="http://h/", token=TOKEN)
    changed = spec.model_copy(update={"token": "other-secret", "read_timeout": 1})
    assert isinstance(changed.token, SecretStr) and "other-secret" not in repr(changed)
    assert changed.read_timeout == 1.0 and changed.base_url == "http://h/"
    with pytest.raises(ValidationError, match="base_url"):
        spec.model_copy(update={"base_url": "h:1"})
    assert spec.model_copy() == spec


def test_credentials_in_the_url_are_refused():
    import pytest

    from synapse_ray.backend import BackendSpec

    with pytest.raises(ValueError, match="must not carry credentials"):
        BackendSpec(base_url="http://user:pw@127.0.0.1:9/")
