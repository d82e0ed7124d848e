"""Token providers: environment locally, Secrets Manager (moto) in AWS, refreshed on demand."""

import json

import boto3
import pytest
from moto import mock_aws

from voucher_distributor.adapters.certiverse import (
    EnvToken,
    SecretsManagerToken,
    StaticToken,
    TokenUnavailable,
)


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        # Powertools keeps one provider (and its cache) per process: start each test clean.
        from aws_lambda_powertools.utilities.parameters import secrets

        secrets.DEFAULT_PROVIDERS.clear()
        yield boto3.client("secretsmanager", region_name="us-east-1")
        secrets.DEFAULT_PROVIDERS.clear()


def test_env_token_reads_the_variable_and_rereads_on_refresh(monkeypatch):
    monkeypatch.setenv("CERTIVERSE_TOKEN", " first ")
    tokens = EnvToken()
    assert tokens.get_token() == "first"
    monkeypatch.setenv("CERTIVERSE_TOKEN", "second")
    assert tokens.get_token() == "first"  # cached
    assert tokens.get_token(refresh=True) == "second"


def test_env_token_missing_says_what_to_set(monkeypatch):
    monkeypatch.delenv("CERTIVERSE_TOKEN", raising=False)
    with pytest.raises(TokenUnavailable, match="set CERTIVERSE_TOKEN"):
        EnvToken().get_token()


def test_static_token_refuses_blank():
    with pytest.raises(TokenUnavailable):
        StaticToken("  ")


def test_secret_plain_string_is_cached_until_refresh(aws):
    aws.create_secret(Name="certiverse/token", SecretString="tok-1")
    tokens = SecretsManagerToken("certiverse/token", max_age_s=300)
    assert tokens.get_token() == "tok-1"
    aws.put_secret_value(SecretId="certiverse/token", SecretString="tok-2")
    assert tokens.get_token() == "tok-1"  # served from the cache, no call
    assert tokens.get_token(refresh=True) == "tok-2"  # rotated: refetched


def test_secret_json_with_token_key(aws):
    aws.create_secret(Name="certiverse/json", SecretString=json.dumps({"token": "tok-json"}))
    assert SecretsManagerToken("certiverse/json").get_token() == "tok-json"


def test_missing_or_empty_secret_is_a_clear_error(aws):
    with pytest.raises(TokenUnavailable, match="could not read the Certiverse token secret"):
        SecretsManagerToken("certiverse/absent").get_token()
    aws.create_secret(Name="certiverse/empty", SecretString=json.dumps({"other": 1}))
    with pytest.raises(TokenUnavailable, match="is empty"):
        SecretsManagerToken("certiverse/empty").get_token()
