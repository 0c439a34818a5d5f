"""Preset tables: every file parses, every value has a source, and specific entries override."""

from __future__ import annotations

import pytest

from lnl.presets import _entries, get_preset, list_methods


@pytest.mark.parametrize("method", list_methods())
def test_every_entry_has_flags_and_a_source(method):
    for entry in _entries(method):
        assert entry["flags"] and isinstance(entry["source"], str) and entry["source"].strip()


def test_specific_entries_override_general_ones():
    digits = get_preset("standard", dataset="digits")
    cifar = get_preset("standard", dataset="cifar10", noise_mode="sym", r=0.5)
    assert digits.flags["num_epochs"] == 30 and cifar.flags["num_epochs"] == 200
    assert "digits" in digits.sources["lr"]


def test_a_list_in_match_accepts_any_of_its_values():
    from lnl.presets import matches

    assert matches({"dataset": ["digits", "digits16"]}, {"dataset": "digits16", "r": 0.4})
    assert not matches({"dataset": ["digits", "digits16"]}, {"dataset": "cifar10"})
    assert matches({"dataset": ["cifar10"], "r": [0.2, 0.5]}, {"dataset": "cifar10", "r": 0.5})
    assert not matches({"dataset": ["cifar10"], "r": [0.2, 0.5]}, {"dataset": "cifar10", "r": 0.8})


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="no presets for method 'nope'"):
        get_preset("nope")
