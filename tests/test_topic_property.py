"""Property tests: topic matching against independent references of RabbitMQ's rules,
and algebraic properties of headers matching."""

from __future__ import annotations

import re
from functools import cache

from hypothesis import given
from hypothesis import strategies as st

from rabbitry.routing import headers_match, topic_matches
from rabbitry.spec.model import ArgValue, HeadersMatch

# ------------------------------------------------------------------ references


def split_topic_key(text: str) -> tuple[str, ...]:
    """RabbitMQ's split_topic_key: ``<<>>`` is no words at all."""
    return tuple(text.split(".")) if text else ()


@cache
def recursive_reference(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    """The rules as a memoised recursive definition over word lists."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # zero words, or swallow one and stay on the '#'
        return recursive_reference(rest, key) or (
            bool(key) and recursive_reference(pattern, key[1:])
        )
    if not key:
        return False
    return (head in ("*", key[0])) and recursive_reference(rest, key[1:])


def regex_reference(pattern: str, key: str) -> bool:
    """The rules as a regex over a key where every word is written ``/word``.

    Words come from an alphabet without ``/``, so ``/`` marks exactly where a
    word starts; the empty key is the empty string (no words), ``a.`` is
    ``/a/``.
    """
    parts = {"*": "/[^/]*", "#": "(?:/[^/]*)*"}
    regex = "".join(parts.get(w, "/" + re.escape(w)) for w in split_topic_key(pattern))
    subject = "".join("/" + w for w in split_topic_key(key))
    return re.fullmatch(regex, subject) is not None


# --------------------------------------------------------------------- strategies

# Small alphabets with the empty word, so "..", leading and trailing dots, and
# the empty key come up all the time.
KEY_WORD = st.sampled_from(["", "a", "b", "ab"])
PATTERN_WORD = st.sampled_from(["", "a", "b", "*", "#", "#", "*"])

keys = st.lists(KEY_WORD, max_size=6).map(".".join)
patterns = st.lists(PATTERN_WORD, max_size=6).map(".".join)


# ---------------------------------------------------------------- topic properties


@given(patterns, keys)
def test_topic_matches_agrees_with_the_recursive_reference(pattern: str, key: str) -> None:
    expected = recursive_reference(split_topic_key(pattern), split_topic_key(key))
    assert topic_matches(pattern, key) is expected


@given(patterns, keys)
def test_topic_matches_agrees_with_the_regex_reference(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) is regex_reference(pattern, key)


@given(keys)
def test_hash_matches_every_key(key: str) -> None:
    assert topic_matches("#", key)
    assert topic_matches("#.#", key)


@given(keys)
def test_a_key_without_wildcards_matches_itself(key: str) -> None:
    assert topic_matches(key, key)


@given(keys)
def test_star_matches_exactly_the_one_word_keys(key: str) -> None:
    assert topic_matches("*", key) is (key != "" and "." not in key)


@given(keys)
def test_trailing_hash_can_match_zero_words(key: str) -> None:
    assert topic_matches("a.#", "a")
    if key:
        assert topic_matches(key + ".#", key)
        assert topic_matches("#." + key, key)


@given(patterns, keys)
def test_a_doubled_hash_means_the_same_as_one(pattern: str, key: str) -> None:
    doubled = ".".join("#.#" if w == "#" else w for w in split_topic_key(pattern))
    assert topic_matches(doubled, key) is topic_matches(pattern, key)


@given(patterns, keys)
def test_appending_a_word_needs_one_more_key_word(pattern: str, key: str) -> None:
    # "p.*" matches "k.w" exactly when "p" matches "k" (p and k non-empty).
    if pattern and key:
        assert topic_matches(pattern + ".*", key + ".a") is topic_matches(pattern, key)


# -------------------------------------------------------------- headers properties

HEADER_NAMES = st.sampled_from(["a", "b", "c", "x-a", "x-b"])
HEADER_VALUES: st.SearchStrategy[ArgValue] = st.one_of(
    st.booleans(),
    st.integers(-1, 2),
    st.sampled_from([0.0, 1.0, 1.5]),
    st.sampled_from(["", "a", "1"]),
    st.none(),
)
tables = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4)
modes = st.sampled_from(list(HeadersMatch))


def _plain(table: dict[str, ArgValue]) -> dict[str, ArgValue]:
    return {k: v for k, v in table.items() if not k.startswith("x-")}


@given(tables, tables)
def test_all_implies_any_when_something_is_compared(
    binding: dict[str, ArgValue], message: dict[str, ArgValue]
) -> None:
    if _plain(binding) and headers_match(HeadersMatch.ALL, binding, message):
        assert headers_match(HeadersMatch.ANY, binding, message)


@given(modes, tables, tables)
def test_any_is_some_single_header_matching(
    mode: HeadersMatch, binding: dict[str, ArgValue], message: dict[str, ArgValue]
) -> None:
    single = {HeadersMatch.ANY: HeadersMatch.ALL, HeadersMatch.ANY_WITH_X: HeadersMatch.ALL_WITH_X}
    if mode in single:
        compared = binding if mode is HeadersMatch.ANY_WITH_X else _plain(binding)
        some = any(headers_match(single[mode], {k: v}, message) for k, v in compared.items())
        assert headers_match(mode, binding, message) is some


@given(modes, tables, tables)
def test_all_is_every_single_header_matching(
    mode: HeadersMatch, binding: dict[str, ArgValue], message: dict[str, ArgValue]
) -> None:
    if mode in (HeadersMatch.ALL, HeadersMatch.ALL_WITH_X):
        every = all(headers_match(mode, {k: v}, message) for k, v in binding.items())
        assert headers_match(mode, binding, message) is every


@given(tables, tables)
def test_plain_modes_ignore_x_keys_in_the_binding(
    binding: dict[str, ArgValue], message: dict[str, ArgValue]
) -> None:
    for mode in (HeadersMatch.ALL, HeadersMatch.ANY):
        assert headers_match(mode, binding, message) is headers_match(
            mode, _plain(binding), message
        )


@given(tables, tables)
def test_with_x_equals_plain_when_the_binding_has_no_x_keys(
    binding: dict[str, ArgValue], message: dict[str, ArgValue]
) -> None:
    plain = _plain(binding)
    assert headers_match(HeadersMatch.ALL_WITH_X, plain, message) is headers_match(
        HeadersMatch.ALL, plain, message
    )
    assert headers_match(HeadersMatch.ANY_WITH_X, plain, message) is headers_match(
        HeadersMatch.ANY, plain, message
    )


@given(modes, tables)
def test_a_message_carrying_the_binding_headers_matches(
    mode: HeadersMatch, binding: dict[str, ArgValue]
) -> None:
    with_x = mode in (HeadersMatch.ALL_WITH_X, HeadersMatch.ANY_WITH_X)
    compared = binding if with_x else _plain(binding)
    if compared or mode in (HeadersMatch.ALL, HeadersMatch.ALL_WITH_X):
        assert headers_match(mode, binding, dict(binding))


@given(st.booleans(), st.integers(-1, 2))
def test_a_bool_never_equals_a_number(flag: bool, number: int) -> None:
    assert not headers_match(HeadersMatch.ALL, {"k": flag}, {"k": number})
    assert not headers_match(HeadersMatch.ALL, {"k": number}, {"k": flag})
    assert not headers_match(HeadersMatch.ANY, {"k": float(number)}, {"k": flag})
