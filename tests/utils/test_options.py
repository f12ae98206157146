"""The one yes/no parser, and the config settings that now go through it."""

import pytest

from facemtl.engine.config import RunConfig
from facemtl.errors import ConfigError
from facemtl.utils.options import parse_bool, parse_bool_or_auto


@pytest.mark.parametrize("word", ["1", "true", "Yes", " ON ", True, 1])
def test_true_words(word):
    assert parse_bool(word) is True


@pytest.mark.parametrize("word", ["0", "false", "NO", "off", False, 0])
def test_false_words(word):
    assert parse_bool(word) is False


@pytest.mark.parametrize("word", ["", "maybe", "2", "auto"])
def test_other_words_are_refused_with_the_accepted_ones(word):
    with pytest.raises(ValueError, match="1, true, yes, on, 0, false, no, off"):
        parse_bool(word)


def test_auto_is_kept_where_allowed():
    assert parse_bool_or_auto("Auto") == "auto"
    assert parse_bool_or_auto("off") is False


@pytest.mark.parametrize("key", ["data.in_memory", "train.channels_last"])
def test_a_setting_that_is_not_yes_no_or_auto_is_refused(key):
    # before: any other word silently meant "off"
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict({section: {name: "maybe"}}).validate()
    for ok in ("auto", "yes", "0", True):
        RunConfig.from_dict({section: {name: ok}}).validate()
