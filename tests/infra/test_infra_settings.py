"""Stack configuration: defaults, and refusals that name the key and the fix."""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest

from infra import settings

BASE = {
    "aws:region": "eu-central-1",
    "billkit:drRegion": "eu-west-1",
    "billkit:certificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/a",
    "billkit:vaultCertificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/b",
}


@pytest.fixture
def config() -> Iterator[dict[str, str]]:
    values = dict(BASE)
    yield values
    pulumi.runtime.set_all_config({})


def load(values: dict[str, str]) -> settings.StackSettings:
    pulumi.runtime.set_all_config(values)
    return settings.load("test")


def test_defaults_are_the_secure_ones(config: dict[str, str]) -> None:
    s = load(config)
    assert s.availability_zones == ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
    assert s.db_multi_az and s.db_deletion_protection and s.nat_per_az
    assert s.log_retention_days == 365 and s.backup_daily_retention_days == 35
    assert s.tags["billkit:stack"] == "test"


@pytest.mark.control("BAK-04")
def test_dr_region_must_differ(config: dict[str, str]) -> None:
    config["billkit:drRegion"] = "eu-central-1"
    with pytest.raises(settings.ConfigError, match="drRegion must differ"):
        load(config)


@pytest.mark.control("LOG-04")
def test_short_log_retention_is_refused(config: dict[str, str]) -> None:
    config["billkit:logRetentionDays"] = "90"
    with pytest.raises(settings.ConfigError, match="logRetentionDays is 90"):
        load(config)


@pytest.mark.parametrize("count", ["1", "4"])
def test_az_count_is_two_or_three(config: dict[str, str], count: str) -> None:
    config["billkit:azCount"] = count
    with pytest.raises(settings.ConfigError, match="2 or 3 zones"):
        load(config)


def test_missing_certificate_names_the_key(config: dict[str, str]) -> None:
    del config["billkit:certificateArn"]
    with pytest.raises(pulumi.ConfigMissingError, match="billkit:certificateArn"):
        load(config)
