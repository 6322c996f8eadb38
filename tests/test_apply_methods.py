"""apply's hand-marshalled methods (``broker._methods``) are pamqp's, byte for byte."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame

from rabbitry.broker import _methods as methods

names = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:"),
    max_size=255,
)
keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.text(max_size=40),
    ),
    lambda inner: st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)
tables = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4))
channels = st.integers(min_value=1, max_value=2047)


def same(channel: int, mine: bytes, theirs: Any) -> None:
    assert methods.method_frame(channel, mine) == frame.marshal(theirs, channel)


@given(
    channel=channels,
    name=names,
    kind=names,
    durable=st.booleans(),
    auto_delete=st.booleans(),
    internal=st.booleans(),
    arguments=tables,
)
def test_exchange_declare(
    *,
    channel: int,
    name: str,
    kind: str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: dict[str, Any] | None,
) -> None:
    mine = methods.exchange_declare(
        name,
        kind,
        durable=durable,
        auto_delete=auto_delete,
        internal=internal,
        arguments=arguments,
    )
    theirs = commands.Exchange.Declare(
        exchange=name,
        exchange_type=kind,
        durable=durable,
        auto_delete=auto_delete,
        internal=internal,
        nowait=True,
        arguments=arguments,
    )
    same(channel, mine, theirs)


@given(
    channel=channels,
    name=names,
    durable=st.booleans(),
    exclusive=st.booleans(),
    auto_delete=st.booleans(),
    arguments=tables,
)
def test_queue_declare(
    *,
    channel: int,
    name: str,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: dict[str, Any] | None,
) -> None:
    mine = methods.queue_declare(
        name, durable=durable, exclusive=exclusive, auto_delete=auto_delete, arguments=arguments
    )
    theirs = commands.Queue.Declare(
        queue=name,
        durable=durable,
        exclusive=exclusive,
        auto_delete=auto_delete,
        nowait=True,
        arguments=arguments,
    )
    same(channel, mine, theirs)


@given(channels, names, names, st.text(max_size=255 // 4), tables)
def test_binds_and_exchange_unbind(
    channel: int, destination: str, source: str, key: str, arguments: dict[str, Any] | None
) -> None:
    same(
        channel,
        methods.queue_bind(destination, source, key, arguments),
        commands.Queue.Bind(
            queue=destination, exchange=source, routing_key=key, nowait=True, arguments=arguments
        ),
    )
    for mine, kind in (
        (methods.exchange_bind, commands.Exchange.Bind),
        (methods.exchange_unbind, commands.Exchange.Unbind),
    ):
        same(
            channel,
            mine(destination, source, key, arguments),
            kind(
                destination=destination,
                source=source,
                routing_key=key,
                nowait=True,
                arguments=arguments,
            ),
        )


@given(channels, names, st.booleans(), st.booleans())
def test_deletes(channel: int, name: str, if_unused: bool, if_empty: bool) -> None:
    same(
        channel,
        methods.queue_delete(name, if_unused=if_unused, if_empty=if_empty),
        commands.Queue.Delete(queue=name, if_unused=if_unused, if_empty=if_empty, nowait=True),
    )
    same(
        channel,
        methods.exchange_delete(name),
        commands.Exchange.Delete(exchange=name, nowait=True),
    )
