"""Env values beyond Vast's 256 characters travel as NAME__1, NAME__2, ...: split and join."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastdrop.envparts import (
    MAX_TOTAL_CHARS,
    MAX_VALUE_CHARS,
    docker_env_length,
    join_parts,
    split_values,
)

_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,30}", fullmatch=True).filter(lambda n: not re.search(r"__[0-9]+$", n))
# Any unicode but surrogates (not encodable, never in an environment) and NUL (never in one either).
_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=2000)
_envs = st.dictionaries(_names, st.one_of(_values, st.sampled_from(["", "a=b c", "=", " = ", "x" * 257])),
                        max_size=12)


def test_documented_limits():
    assert (MAX_VALUE_CHARS, MAX_TOTAL_CHARS) == (256, 32768)


@settings(max_examples=300, deadline=None)
@given(_envs)
def test_split_then_join_is_the_identity_and_every_part_fits(env):
    sent = split_values(env)
    assert all(len(v) <= MAX_VALUE_CHARS for v in sent.values())
    assert join_parts(sent) == env
    assert list(join_parts(sent)) == list(env)  # order kept
    for name, value in env.items():
        if len(value) <= MAX_VALUE_CHARS:
            assert sent[name] == value and f"{name}__1" not in sent
        else:
            assert name not in sent
            count = -(-len(value) // MAX_VALUE_CHARS)
            assert [f"{name}__{i}" for i in range(1, count + 1)] == [k for k in sent if k.startswith(name + "__")
                                                                     and k[len(name) + 2:].isdigit()]


@settings(max_examples=100, deadline=None)
@given(_envs, st.integers(min_value=1, max_value=300))
def test_any_part_size_round_trips_without_name_collisions(env, limit):
    sent = split_values(env, limit)
    assert all(len(v) <= limit for v in sent.values())
    assert join_parts(sent) == env
    # every name sent is either an input name (kept whole) or a part of exactly one input name
    for key in sent:
        if key not in env:
            base, _, n = key.rpartition("__")
            assert base in env and n.isdigit() and base not in sent


def test_a_presigned_url_becomes_parts_of_at_most_256_in_order():
    url = "https://s3.example.com/bucket/input/deep%20dir/%C3%BC.mp4?X-Amz-Signature=" + "ab" * 200
    sent = split_values({"JOB_ID": "j", "JOB_INPUT_URL": url, "JOB_CRF": "18"})
    assert list(sent) == ["JOB_ID", "JOB_INPUT_URL__1", "JOB_INPUT_URL__2", "JOB_CRF"]
    assert sent["JOB_INPUT_URL__1"] == url[:256] and sent["JOB_INPUT_URL__2"] == url[256:]


def test_values_within_the_limit_are_unchanged():
    env = {"A": "x" * 256, "B": "", "C": "k=v w"}
    assert split_values(env) == env


def test_names_that_look_like_parts_are_refused():
    with pytest.raises(ValueError, match=r"JOB_X__2") as info:
        split_values({"JOB_X__2": "secret-value", "OK": "1"})
    assert "secret-value" not in str(info.value)


def test_docker_env_length_is_the_flag_form():
    assert docker_env_length({"A": "1", "BB": "x y"}) == len("-e A=1 -e BB=x y")
    assert docker_env_length({}) == 0


def test_plain_values_alone_keep_working():
    env = {"JOB_INPUT_URL": "file:///x.mp4", "PATH": "/bin"}
    assert join_parts(env) == env


def test_a_plain_value_equal_to_its_parts_is_accepted():
    assert join_parts({"K": "abcd", "K__1": "ab", "K__2": "cd"}) == {"K": "abcd"}


def test_a_gap_names_the_variable_and_the_missing_part_never_a_value():
    with pytest.raises(ValueError) as info:
        join_parts({"JOB_INPUT_URL__1": "https://secret-one", "JOB_INPUT_URL__3": "secret-three"})
    text = str(info.value)
    assert "JOB_INPUT_URL__2" in text and "missing" in text
    assert "secret" not in text


def test_parts_not_starting_at_one_are_a_gap():
    with pytest.raises(ValueError, match="K__1"):
        join_parts({"K__2": "b"})


def test_a_plain_value_that_differs_from_its_parts_is_a_conflict():
    with pytest.raises(ValueError) as info:
        join_parts({"JOB_CALLBACK_SECRET": "plain-secret", "JOB_CALLBACK_SECRET__1": "other-secret"})
    text = str(info.value)
    assert "JOB_CALLBACK_SECRET" in text and "different" in text
    assert "plain-secret" not in text and "other-secret" not in text


def test_every_malformed_set_is_reported_at_once():
    with pytest.raises(ValueError) as info:
        join_parts({"A__2": "x", "B": "1", "B__1": "2"})
    assert "A__1" in str(info.value) and "B:" in str(info.value)


def test_zero_and_leading_zero_suffixes_are_plain_names():
    env = {"K__0": "a", "K__01": "b"}
    assert join_parts(env) == env
