"""tests/support/pins.py: which set of pins a platform is held to."""

import json

import pytest

from support import pins


@pytest.fixture
def pin_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pins, "platform_key", lambda: "platform B")
    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"sets": [
        {"platform": None, "pins": {"ref": ["a", 1], "other": ["x"]}},
        {"platform": "platform B", "pins": {"ref": ["b", 2], "other": ["y"]}},
    ]}))
    return path


def test_the_set_made_under_this_platforms_key_wins_without_computing_the_reference(pin_file):
    def reference():
        raise AssertionError("the reference case is computed only where no set carries this platform's key")

    assert pins.pins_for_this_platform(pin_file, "ref", reference) == {"ref": ["b", 2], "other": ["y"]}


def test_an_unkeyed_platform_takes_the_set_its_reference_case_reproduces(pin_file, monkeypatch):
    monkeypatch.setattr(pins, "platform_key", lambda: "platform C")
    assert pins.pins_for_this_platform(pin_file, "ref", lambda: ("a", 1)) == {"ref": ["a", 1], "other": ["x"]}
    assert pins.pins_for_this_platform(pin_file, "ref", lambda: ("c", 3)) is None


def test_recording_replaces_only_this_platforms_set(pin_file):
    pins.record_this_platform(pin_file, {"ref": ("b", 3)})
    sets = pins.load_sets(pin_file)
    assert [s["platform"] for s in sets] == [None, "platform B"]
    assert sets[1]["pins"] == {"ref": ["b", 3]}


def test_the_platform_key_is_stable_within_a_process():
    assert pins.platform_key() == pins.platform_key()
