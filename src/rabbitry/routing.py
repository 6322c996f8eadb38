"""The offline AMQP routing model: where a message goes, as RabbitMQ 3.10 routes it.

Two kinds of question are answered over one matcher:

- *concrete*: a user's routing key and headers (``rabbitry route jobs.status 1234``);
- *symbolic*: a spec message, whose routing key and header values are templates
  filled from its fields (``job.{job_type}``).

A routing key or binding key is a sequence of *words* (split on ``.``).  A word
is a literal, a ``{param}`` template, or -- in a topic binding key -- ``*`` or
``#``.  A ``{param}`` stands for exactly one word.  Matching a word may add a
*condition* (a ``Condition``, data that renders itself): ``when job_type = pdf``
(the message's field must have that value) or ``bound at run time with job_id
= 1234`` (a consumer must have made the binding with that value).  A
destination with no conditions is always reached.

Observed on RabbitMQ 3.10.8 (management API ``/api/exchanges/%2F/X/publish``,
which answers ``{"routed": bool}``, and aiormq with ``mandatory``):

- Topic, the empty key is zero words: ``""`` matches ``#``, ``#.#`` and ``""``;
  it does not match ``*``, ``*.#``, ``#.*`` or ``a.#``.
- Topic, a trailing dot makes an empty last word: ``a.`` matches ``a.*``,
  ``a.#``, ``*.*``, ``#.``, ``*.`` and ``a.``, but not ``a`` or ``*``;
  ``.`` matches ``*.*``, ``*.``, ``.#`` and ``.`` (two empty words);
  ``a..b`` and ``order..created`` match ``a.*.b``-style patterns.
- Topic, ``#`` matches zero words: ``a.b`` matches ``a.#.b`` and ``a.#.#.b``;
  ``a`` matches ``a.#`` and ``#.a``; ``*.#`` needs at least one word.
- Direct: ``*`` and ``#`` are literal (``a.*`` routes only the key ``a.*``).
- Headers: a bool never equals a number (``true`` vs ``1`` and ``0`` vs
  ``false`` do not match); at the top level ``1`` equals ``1.0`` (Erlang
  ``==``), but inside an array or table ``[1]`` does not equal ``[1.0]``
  (type tags are compared; a table's key order does not matter); a binding
  value of void (``None``) only asks that the header be present; ``x-match``
  itself is never compared, even in ``all-with-x``; ``any`` with no
  non-``x-`` binding header never matches, ``all`` always does.
- Alternate exchanges: a topic exchange whose only match is an exchange binding
  to an exchange with no bindings does *not* use its AE (the message is
  unroutable); an exchange reached through an exchange binding uses its own AE
  when it matches nothing; an AE's own AE is followed.
- Exchange-binding cycles terminate, and a queue reached by two paths gets one
  copy.
- Dead-letter and alternate exchanges are the effective ones
  (``spec.policies``): an x-argument, or the applying policy's value where no
  argument overrides it (the argument wins for both keys on 3.10).
- The default exchange routes the key to the queue of that name; ``""`` routes
  nowhere.
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from rabbitry.errors import RoutingError
from rabbitry.spec.diagnostics import did_you_mean
from rabbitry.spec.model import (
    BUILTIN_EXCHANGES,
    ArgValue,
    Binding,
    ExchangeType,
    HeadersMatch,
    Message,
    Spec,
    placeholders,
)
from rabbitry.spec.policies import Setting, alternate_of, dead_letter_of

__all__ = [
    "Condition",
    "Destination",
    "Side",
    "dead_letter_route",
    "headers_match",
    "route",
    "route_message",
    "topic_matches",
]


@dataclass(frozen=True)
class Destination:
    """A queue a message reaches, how, and on what conditions.

    ``path`` is the bindings followed, in order.  Two hops that are not spec
    bindings appear as synthesised ones: the default exchange's implicit
    binding (``source=""``, ``key`` = the queue's name) and an alternate
    exchange (``destination_type="exchange"``, ``arguments`` holding
    ``alternate-exchange``).  ``conditions`` is empty when the queue is always
    reached.
    """

    queue: str
    path: tuple[Binding, ...]
    conditions: tuple[Condition, ...] = ()

    @property
    def certain(self) -> bool:
        """Reached whenever the message is sent: no condition at all."""
        return not self.conditions

    def on(self, side: Side) -> tuple[Condition, ...]:
        """The conditions of one kind."""
        return tuple(c for c in self.conditions if c.side is side)


# --------------------------------------------------------------------------- words


class _Kind(Enum):
    LITERAL = "literal"
    TEMPLATE = "template"  # holds one or more {param}s
    STAR = "*"
    HASH = "#"


@dataclass(frozen=True)
class _Word:
    kind: _Kind
    text: str


@functools.lru_cache(maxsize=4096)
def _words(text: str, *, wildcards: bool, templates: bool) -> tuple[_Word, ...]:
    """Split a routing or binding key into words; ``""`` has none (as RabbitMQ)."""
    if text == "":
        return ()
    return tuple(_word(part, wildcards=wildcards, templates=templates) for part in text.split("."))


def _word(part: str, *, wildcards: bool, templates: bool) -> _Word:
    if wildcards and part in ("*", "#"):
        return _Word(_Kind(part), part)
    if templates and placeholders(part):
        return _Word(_Kind.TEMPLATE, part)
    return _Word(_Kind.LITERAL, part)


@functools.lru_cache(maxsize=1024)
def _template_regex(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A regex filling ``template``'s placeholders, and the name of each group.

    A name used twice must take the same value twice (a back-reference).
    """
    pattern, rest = "", template
    names: list[str] = []
    for name in placeholders(template):
        before, _, rest = rest.partition("{" + name + "}")
        pattern += re.escape(before)
        if name in names:
            pattern += f"(?P=g{names.index(name)})"
        else:
            pattern += f"(?P<g{len(names)}>.*)"
            names.append(name)
    return re.compile(pattern + re.escape(rest), re.DOTALL), tuple(names)


def _fill(template: str, value: ArgValue) -> dict[str, str] | None:
    """The placeholder values that make ``template`` equal ``value``, or None."""
    if not isinstance(value, str):
        # A filled template is always sent as a string (``messaging.contract``), and the
        # broker never finds a string equal to a number, a bool or a table.
        return None
    regex, names = _template_regex(template)
    found = regex.fullmatch(value)
    if found is None:
        return None
    return {name: found.group(f"g{i}") for i, name in enumerate(names)}


def _show(value: ArgValue) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------- conditions


class Side(Enum):
    """Who must make a condition of a route true."""

    #: A message field must have the value (``when job_type = pdf``).
    FIELD = "field"
    #: A consumer must have made a run-time binding with the value
    #: (``bound at run time with job_id = 1234``).
    RUNTIME_BINDING = "runtime-binding"
    #: No binding of the exchange ``name`` may match: the route goes through
    #: its alternate exchange, which is taken only then (``value`` is empty).
    NO_MATCH = "no-match"


@dataclass(frozen=True)
class Condition:
    """One condition on which a destination is reached: data, rendered once by ``str``.

    ``name`` is a message field (``FIELD``), a binding key's parameter
    (``RUNTIME_BINDING``) or an exchange (``NO_MATCH``); ``value`` is what
    the field or parameter must be, as it appears on the wire (a string: a
    routing key's word, or a header value shown as JSON when not a string).
    """

    side: Side
    name: str
    value: str = ""

    def __str__(self) -> str:
        if self.side is Side.FIELD:
            return f"when {self.name} = {self.value}"
        if self.side is Side.RUNTIME_BINDING:
            return f"bound at run time with {self.name} = {self.value}"
        return f"when no binding of {self.name!r} matches"

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Field conditions first, then run-time bindings, then alternate exchanges."""
        return (_ORDER[self.side], self.name, self.value)


_ORDER = {Side.FIELD: 0, Side.RUNTIME_BINDING: 1, Side.NO_MATCH: 2}
_Env = frozenset[Condition]
_NO_CONDITIONS: _Env = frozenset()


def _bind(env: _Env, side: Side, values: Mapping[str, str] | None) -> _Env | None:
    """``env`` with ``values`` added, or None if one contradicts it."""
    if values is None:
        return None
    for name, value in values.items():
        known = [c.value for c in env if c.side is side and c.name == name]
        if known and known[0] != value:
            return None
        env = env | {Condition(side, name, value)}
    return env


def _sorted(env: _Env) -> tuple[Condition, ...]:
    return tuple(sorted(env, key=lambda c: c.sort_key))


def _cost(env: _Env) -> tuple[int, tuple[tuple[int, str, str], ...]]:
    return len(env), tuple(c.sort_key for c in _sorted(env))


# ------------------------------------------------------------------------ matching


def _meet(pattern: _Word, key: _Word, env: _Env) -> _Env | None:
    """Does one binding word meet one key word, and on what conditions."""
    if pattern.kind is _Kind.STAR:
        return env
    if key.kind is _Kind.LITERAL and pattern.kind is _Kind.LITERAL:
        return env if pattern.text == key.text else None
    if key.kind is _Kind.TEMPLATE and pattern.kind is _Kind.TEMPLATE:
        return env if pattern.text == key.text else None
    if pattern.kind is _Kind.TEMPLATE:
        return _bind(env, Side.RUNTIME_BINDING, _fill(pattern.text, key.text))
    return _bind(env, Side.FIELD, _fill(key.text, pattern.text))


def _match(pattern: tuple[_Word, ...], key: tuple[_Word, ...], env: _Env) -> _Env | None:
    """The cheapest conditions under which ``pattern`` matches ``key``, or None.

    A set-of-states walk over the pattern (an NFA): each state is how many key
    words are consumed so far and the conditions taken on the way.
    """
    states: set[tuple[int, _Env]] = {(0, env)}
    for word in pattern:
        states = set(_advance(word, key, states))
        if not states:
            return None
    return min((e for i, e in states if i == len(key)), key=_cost, default=None)


def _advance(
    word: _Word, key: tuple[_Word, ...], states: Iterable[tuple[int, _Env]]
) -> Iterator[tuple[int, _Env]]:
    for at, env in states:
        if word.kind is _Kind.HASH:
            yield from ((j, env) for j in range(at, len(key) + 1))
        elif at < len(key) and (met := _meet(word, key[at], env)) is not None:
            yield at + 1, met


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic binding key matches a concrete routing key, as RabbitMQ decides.

    Words are split on ``.``; ``*`` is exactly one word (possibly empty), ``#``
    zero or more; the empty string is zero words.  ``{...}`` is literal here.
    The module docstring lists the edge cases checked against a live broker.
    """
    words = _words(pattern, wildcards=True, templates=False)
    return _match(words, _words(key, wildcards=False, templates=False), _NO_CONDITIONS) is not None


# ------------------------------------------------------------------------- headers

_WITH_X = (HeadersMatch.ALL_WITH_X, HeadersMatch.ANY_WITH_X)


def headers_match(
    match: HeadersMatch,
    binding_headers: Mapping[str, ArgValue],
    message_headers: Mapping[str, ArgValue],
) -> bool:
    """Whether a headers binding matches a message's headers, as RabbitMQ decides.

    ``all``/``any`` ignore binding keys starting with ``x-``; the ``-with-x``
    modes compare them too (``x-match`` itself never).  A binding value of
    ``None`` (void) asks only that the header be present.  A bool never equals a
    number; numbers compare by value at the top level.
    """
    env = _headers_env(match, binding_headers, message_headers, _NO_CONDITIONS, templates=False)
    return env is not None


def _headers_env(
    match: HeadersMatch,
    binding: Mapping[str, ArgValue],
    message: Mapping[str, ArgValue],
    env: _Env,
    *,
    templates: bool,
) -> _Env | None:
    wanted = [(k, v) for k, v in binding.items() if _compared(match, k)]
    if match in (HeadersMatch.ALL, HeadersMatch.ALL_WITH_X):
        acc: _Env | None = env
        for name, value in wanted:
            if acc is None:
                return None
            acc = _header_env(name, value, message, acc, templates=templates)
        return acc
    hits = (_header_env(k, v, message, env, templates=templates) for k, v in wanted)
    return min((h for h in hits if h is not None), key=_cost, default=None)


def _compared(match: HeadersMatch, name: str) -> bool:
    if name == "x-match":
        return False
    return match in _WITH_X or not name.startswith("x-")


def _header_env(
    name: str, expected: ArgValue, message: Mapping[str, ArgValue], env: _Env, *, templates: bool
) -> _Env | None:
    if name not in message:
        return None
    actual = message[name]
    if expected is None:
        return env
    if templates and isinstance(actual, str) and placeholders(actual):
        return _bind(env, Side.FIELD, _fill(actual, expected))
    return env if _top_level_equal(expected, actual) else None


def _top_level_equal(a: ArgValue, b: ArgValue) -> bool:
    """Erlang ``==`` on two field values: numbers by value, a bool is no number."""
    if _is_number(a) and _is_number(b):
        return a == b
    return _tagged_equal(a, b)


def _tagged_equal(a: object, b: object) -> bool:
    """Equality inside arrays and tables, where the field types are compared too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_tagged_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_tagged_equal(a[k], b[k]) for k in a)
    return a == b


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Hop:
    """An exchange reached, the conditions taken to reach it, and the path."""

    exchange: str
    env: _Env
    path: tuple[Binding, ...]


@dataclass(frozen=True)
class _Query:
    """What is being routed: the key's words and the headers."""

    key: tuple[_Word, ...]
    headers: Mapping[str, ArgValue]
    templates: bool


def route(
    spec: Spec,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, ArgValue] | None = None,
) -> tuple[Destination, ...]:
    """The queues a message published to ``exchange`` with a concrete key reaches.

    One ``Destination`` per queue, sorted by name.  A binding key with
    ``{param}``s stands for the bindings consumers make at run time: such a
    destination is conditional.  Raises ``RoutingError`` for an exchange that
    is neither declared nor built in, or is internal.
    """
    declared = spec.exchanges.get(exchange)
    if declared is not None and declared.internal:
        raise RoutingError(
            f"exchange {exchange!r} is internal: the broker refuses messages published to it; "
            "publish to an exchange bound to it"
        )
    key = _words(routing_key, wildcards=False, templates=False)
    return _route(spec, exchange, _Query(key, headers or {}, templates=False))


def route_message(spec: Spec, message: Message) -> tuple[Destination, ...]:
    """The queues a spec message reaches, its key and header templates left symbolic.

    Computed once per spec and message: check, the contract, generate and docs
    all ask, and at 20,000 queues each asking again was seconds.
    """
    routes = spec.derived(_message_routes)
    known = routes.get(message.name)
    if known is not None and known[0] is message:
        return known[1]
    key = _words(message.routing_key, wildcards=False, templates=True)
    found = _route(spec, message.exchange, _Query(key, message.headers, templates=True))
    routes[message.name] = (message, found)
    return found


def _message_routes(spec: Spec) -> dict[str, tuple[Message, tuple[Destination, ...]]]:
    """Where each message routes, filled as asked (kept with the message it is for, so
    that a message not of this spec is routed, not mistaken for its namesake)."""
    return {}


def dead_letter_route(
    spec: Spec,
    queue: str,
    routing_key: str,
    headers: Mapping[str, ArgValue] | None = None,
    *,
    templates: bool = False,
) -> tuple[Destination, ...]:
    """Where a message rejected from ``queue`` goes; ``()`` with no dead-letter exchange.

    It is republished to the queue's dead-letter exchange with the queue's
    dead-letter routing key if it has one, else with its own key.  With
    ``templates``, the key and headers are a spec message's (``{field}`` left
    symbolic, as in ``route_message``).
    """
    declared = spec.queues.get(queue)
    if declared is None:
        hint = did_you_mean(queue, spec.queues, "queues")
        raise RoutingError(f"unknown queue {queue!r}: {hint}")
    # The effective settings: an x-argument, or a policy where no argument overrides it.
    exchange, dead_letter_key = dead_letter_of(spec, declared.name)
    if exchange is None:
        return ()
    own_key = dead_letter_key is None
    key = routing_key if dead_letter_key is None else str(dead_letter_key.value)
    words = _words(key or "", wildcards=False, templates=templates and own_key)
    query = _Query(words, headers or {}, templates=templates)
    return _route(spec, str(exchange.value), query)


def _route(
    spec: Spec, exchange: str, query: _Query, candidates: Candidates | None = None
) -> tuple[Destination, ...]:
    """Breadth-first over exchanges, each routed once per set of conditions.

    That is RabbitMQ's cycle protection (an exchange is routed once per
    message) for an unconditional route; conditions are finitely many, so a
    cycle that keeps adding them ends too.
    """
    best: dict[str, Destination] = {}
    todo = deque([_Hop(exchange, _NO_CONDITIONS, ())])
    seen: set[tuple[str, _Env]] = set()
    while todo:
        hop = todo.popleft()
        if (hop.exchange, hop.env) in seen:
            continue
        seen.add((hop.exchange, hop.env))
        for binding, env in _step(spec, hop, query, candidates or _candidates):
            path = (*hop.path, binding)
            if binding.destination_type == "exchange":
                todo.append(_Hop(binding.destination, env, path))
            else:
                _keep(best, Destination(binding.destination, path, _sorted(env)))
    return tuple(best[name] for name in sorted(best))


def _keep(best: dict[str, Destination], found: Destination) -> None:
    """Keep the first-found destination with the fewest conditions."""
    known = best.get(found.queue)
    if known is None or len(found.conditions) < len(known.conditions):
        best[found.queue] = found


def _step(
    spec: Spec, hop: _Hop, query: _Query, candidates: Candidates
) -> list[tuple[Binding, _Env]]:
    """The bindings of one exchange that match, then its alternate exchange if due."""
    kind = _exchange_type(spec, hop.exchange)
    # A message field has one value along the whole path; a run-time binding's
    # parameters belong to that binding alone.
    start = frozenset(c for c in hop.env if c.side is not Side.RUNTIME_BINDING)
    taken: list[tuple[Binding, _Env]] = []
    for binding in candidates(spec, hop.exchange, kind, query):
        env = _binding_env(kind, binding, query, start)
        if env is not None:
            taken.append((binding, hop.env | env))
    alternate = _alternate(spec, hop, [env for _, env in taken])
    return taken + alternate


def _alternate(spec: Spec, hop: _Hop, matched: list[_Env]) -> list[tuple[Binding, _Env]]:
    """The alternate-exchange hop, when the exchange's own bindings may match nothing."""
    alternate = alternate_of(spec, hop.exchange)  # an argument, or a policy's
    if alternate is None or hop.env in matched:
        return []
    name = str(alternate.value)
    env = hop.env
    if matched:
        env = env | {Condition(Side.NO_MATCH, hop.exchange)}
    pseudo = Binding(
        source=hop.exchange,
        destination=name,
        destination_type="exchange",
        arguments=MappingProxyType(_alternate_arguments(name, alternate)),
    )
    return [(pseudo, env)]


def _alternate_arguments(name: str, alternate: Setting) -> dict[str, ArgValue]:
    """The pseudo-binding's table: the alternate exchange, and the policy that set it."""
    table: dict[str, ArgValue] = {"alternate-exchange": name}
    if alternate.policy is not None:
        table["policy"] = alternate.policy.name
    return table


def _exchange_type(spec: Spec, name: str) -> ExchangeType:
    kind = spec.exchange_type(name)
    if kind is not None:
        return kind
    known = [*spec.exchanges, *(b for b in BUILTIN_EXCHANGES if b)]
    raise RoutingError(f"unknown exchange {name!r}: {did_you_mean(name, known, 'exchanges')}")


def _bindings_of(spec: Spec, exchange: str) -> tuple[Binding, ...]:
    """The spec's bindings from ``exchange``; the default exchange's are implicit."""
    if exchange == "":
        return spec.derived(_implicit_bindings)
    return spec.bindings_from(exchange)


def _implicit_bindings(spec: Spec) -> tuple[Binding, ...]:
    """The default exchange's binding to each queue, keyed by the queue's name."""
    return tuple(Binding(source="", destination=q, key=q) for q in spec.queues)


#: Which bindings of an exchange are worth matching against a query: every one
#: (the reference, ``_every_binding``) or those a key index lets through
#: (``_candidates``, what routing uses).  The two must route alike: a property
#: test holds them to it.
Candidates = Callable[[Spec, str, ExchangeType, "_Query"], Iterable[Binding]]


def _every_binding(
    spec: Spec, exchange: str, kind: ExchangeType, query: _Query
) -> Iterable[Binding]:
    """Every binding of ``exchange``: the simple reference the index is tested against."""
    return _bindings_of(spec, exchange)


def _candidates(spec: Spec, exchange: str, kind: ExchangeType, query: _Query) -> Iterable[Binding]:
    """The bindings of ``exchange`` that may match ``query``, in the spec's order.

    A superset of those that match: the exact match (``_binding_env``) runs on
    each.  Fanout and headers exchanges give every binding; a topic or direct
    exchange walks its key trie (``_KeyTrie``), so that a key meets the few
    bindings that share its words, not every binding of the exchange.
    """
    if kind is ExchangeType.FANOUT or kind is ExchangeType.HEADERS:
        return _bindings_of(spec, exchange)
    if exchange == "":
        if len(query.key) == 1 and query.key[0].kind is _Kind.LITERAL:
            name = query.key[0].text
            return (Binding(source="", destination=name, key=name),) if name in spec.queues else ()
        return _bindings_of(spec, exchange)
    tries = spec.derived(_key_tries)
    trie = tries.get(exchange)
    if trie is None:
        trie = tries[exchange] = _KeyTrie(
            spec.bindings_from(exchange), wildcards=kind is ExchangeType.TOPIC
        )
    return trie.candidates(query.key)


@dataclass
class _Node:
    """A trie node: the bindings whose key ends here, and the words that go on."""

    literal: dict[str, _Node] = field(default_factory=dict)
    #: Words that meet more than one key word: ``*`` and ``{param}`` templates.
    other: dict[_Word, _Node] = field(default_factory=dict)
    #: The node after a ``#``; ``absorbs``: this node was reached by ``#``.
    hash: _Node | None = None
    absorbs: bool = False
    ends: list[int] = field(default_factory=list)


class _KeyTrie:
    """The binding keys of one topic or direct exchange, word by word.

    ``candidates(key)`` walks the key's words through it as the broker's own
    topic trie does, keeping every node a word may reach: a literal word
    follows its own branch and every ``*`` or template branch; a template
    word (a message field, any value) follows every branch; a ``#`` node
    takes any number of words.
    """

    def __init__(self, bindings: tuple[Binding, ...], *, wildcards: bool) -> None:
        self.bindings = bindings
        self.root = _Node()
        for index, binding in enumerate(bindings):
            node = self.root
            for word in _words(binding.key, wildcards=wildcards, templates=True):
                node = self._child(node, word)
            node.ends.append(index)

    @staticmethod
    def _child(node: _Node, word: _Word) -> _Node:
        if word.kind is _Kind.HASH:
            if node.hash is None:
                node.hash = _Node(absorbs=True)
            return node.hash
        if word.kind is _Kind.LITERAL:
            return node.literal.setdefault(word.text, _Node())
        return node.other.setdefault(word, _Node())

    def candidates(self, key: tuple[_Word, ...]) -> list[Binding]:
        nodes = self._closure([self.root])
        for word in key:
            reached: list[_Node] = [n for n in nodes if n.absorbs]
            for node in nodes:
                if word.kind is _Kind.LITERAL:
                    if (child := node.literal.get(word.text)) is not None:
                        reached.append(child)
                else:
                    reached.extend(node.literal.values())
                reached.extend(node.other.values())
            nodes = self._closure(reached)
            if not nodes:
                return []
        ends = sorted({index for node in nodes for index in node.ends})
        return [self.bindings[index] for index in ends]

    @staticmethod
    def _closure(nodes: list[_Node]) -> list[_Node]:
        """``nodes`` and every ``#`` node reachable from them without a word."""
        seen: dict[int, _Node] = {}
        todo = list(nodes)
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen[id(node)] = node
            if node.hash is not None:
                todo.append(node.hash)
        return list(seen.values())


def _key_tries(spec: Spec) -> dict[str, _KeyTrie]:
    """The key trie of each topic or direct exchange, built when first routed through
    (a lookup on a large spec builds one exchange's, not every one)."""
    return {}


def _binding_env(kind: ExchangeType, binding: Binding, query: _Query, env: _Env) -> _Env | None:
    if kind is ExchangeType.FANOUT:
        return env
    if kind is ExchangeType.HEADERS:
        return _headers_env(
            _headers_mode(binding),
            binding.broker_arguments,
            query.headers,
            env,
            templates=query.templates,
        )
    wildcards = kind is ExchangeType.TOPIC
    return _match(_words(binding.key, wildcards=wildcards, templates=True), query.key, env)


def _headers_mode(binding: Binding) -> HeadersMatch:
    """The binding's ``x-match``; absent (or unknown) is ``all``, as RabbitMQ reads it."""
    if binding.match is not None:
        return binding.match
    raw = binding.arguments.get("x-match")
    modes = {m.value: m for m in HeadersMatch}
    return modes.get(raw, HeadersMatch.ALL) if isinstance(raw, str) else HeadersMatch.ALL
