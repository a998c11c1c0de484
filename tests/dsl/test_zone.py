"""Time zones for `now`: IANA names, and UTC even on a system without a time zone database."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from voicecall.dsl.values import zone


def test_zones_by_iana_name() -> None:
    assert zone("UTC") is datetime.UTC
    paris = datetime.datetime(2026, 7, 1, 12, tzinfo=zone("Europe/Paris"))
    assert paris.utcoffset() == datetime.timedelta(hours=2)
    for bad in ("Europe/Pariss", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ValueError, match="time zone"):
            zone(bad)


def test_without_a_time_zone_database_utc_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> zoneinfo.ZoneInfo:
        raise zoneinfo.ZoneInfoNotFoundError(name)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    monkeypatch.setattr(zoneinfo, "available_timezones", set)
    zone.cache_clear()
    try:
        assert zone("UTC") is datetime.UTC
        with pytest.raises(ValueError, match="no time zone database: pip install tzdata"):
            zone("America/New_York")
    finally:
        zone.cache_clear()
