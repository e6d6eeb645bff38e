"""Key components stay inside their prefix and never collide."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spanstream.sinks.keys import (
    MAX_COMPONENT_CHARS,
    decode_component,
    encode_component,
    is_capped,
    join_key,
)

HOSTILE = [
    "",
    ".",
    "..",
    "../../etc",
    "a/b",
    "a#b",
    "a|b",
    "k=v",
    "~",
    "%41",
    "\x00\x1f\x7f",
    "tenant=evil/dt=2024-01-01",
    "naïve ☃",
    "x" * 10_000,
]

names = st.text(max_size=300) | st.sampled_from(HOSTILE)


def assert_safe(component: str) -> None:
    assert "/" not in component
    assert "#" not in component
    assert "." not in component
    assert component  # an empty segment would merge two separators
    assert component.isascii() and component.isprintable()
    assert len(component) <= MAX_COMPONENT_CHARS


@given(st.lists(names, min_size=2, max_size=40, unique=True))
def test_encode_is_injective_and_safe(sample: list[str]) -> None:
    encoded = [encode_component(name) for name in sample]
    for component in encoded:
        assert_safe(component)
    assert len(set(encoded)) == len(sample)


@given(st.tuples(names, names), st.tuples(names, names))
def test_joined_keys_of_distinct_tuples_differ(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    if first != second:
        assert join_key(*first) != join_key(*second)
    for segment in join_key(*first).split("/"):
        assert segment not in (".", "..")


@given(names)
def test_decode_inverts_encode_unless_capped(name: str) -> None:
    component = encode_component(name)
    if is_capped(component):
        with pytest.raises(ValueError):
            decode_component(component)
    else:
        assert decode_component(component) == name


def test_plain_names_encode_as_themselves() -> None:
    assert encode_component("acme-prod_1") == "acme-prod_1"
    assert join_key("acme", "checkout", "GET /cart") == "acme#checkout#GET%20%2Fcart"


def test_long_names_sharing_a_prefix_do_not_collide() -> None:
    first = "a" * 5_000 + "1"
    second = "a" * 5_000 + "2"
    assert encode_component(first) != encode_component(second)
    assert is_capped(encode_component(first))


def test_cap_never_splits_a_percent_triple() -> None:
    for pad in range(3):
        component = encode_component("x" * pad + "/" * 400)
        prefix = component.split("~")[0]
        assert decode_component(prefix) == "x" * pad + "/" * ((len(prefix) - pad) // 3)


def test_decode_rejects_text_encode_never_yields() -> None:
    with pytest.raises(ValueError):
        decode_component("a%2fb")  # lower-case hex
    with pytest.raises(ValueError):
        decode_component("a.b")
