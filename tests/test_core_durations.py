"""The one duration parser (``--older-than``, ``--retention``, ``RETENTION``): pure."""

from __future__ import annotations

import pytest

from jobgrove import ConfigError, NodeConfig
from jobgrove.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("1.5h", 5400), ("0", 0), (" 7D ", 604800), ("0s", 0),
])
def test_good_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "why"), [
    ("7x", "not a number followed by"), ("-1d", "negative"), ("", "empty"),
    ("  ", "empty"), ("7", "no unit"), ("d", "not a number"), ("1d2h", "not a number"),
    ("1e3s", "not a number"), ("99999999d", "100 years"),
])
def test_bad_durations_name_the_value(text: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert f"invalid duration {text!r}" in str(err.value) and why in str(err.value)


def test_formatting_reads_back() -> None:
    for seconds in (0, 45, 90, 900, 3600, 86400, 604800, 5400):
        assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(604800) == "7d" and format_duration(90) == "90s"


def test_node_config_takes_a_duration_text_or_seconds() -> None:
    assert NodeConfig().retention == 7 * 86400
    assert NodeConfig(retention="12h").retention == 43200
    assert NodeConfig(retention=0).retention == 0
    with pytest.raises(ConfigError, match="invalid duration '7x'"):
        NodeConfig(retention="7x")
    with pytest.raises(ConfigError, match="retention"):
        NodeConfig(retention=-1)
    with pytest.raises(ConfigError, match="log_keep_bytes"):
        NodeConfig(log_keep_bytes=-5)
