"""YAML loading that remembers where each key came from, so a config error can name its line.

A configuration file is read by a person's tool, not trusted: an alias that refers to itself would recurse forever,
nine aliases of nine aliases of ... expand to billions of values (an "alias bomb", the YAML billion laughs), and
nesting a thousand levels deep exhausts the stack. ``load`` refuses each with a ``LimitError`` naming the line,
before anything is built: at most ``MAX_DEPTH`` levels of nesting, ``MAX_ALIASES`` alias uses, ``MAX_VALUES``
values once aliases are expanded, and a key must be a plain value.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]

MAX_DEPTH = 64  # levels of nesting (a configuration uses about six)
MAX_ALIASES = 10_000  # uses of an anchor (``*name``)
MAX_VALUES = 250_000  # values once aliases are expanded (a 1,000-integration configuration has about 40,000)


class LimitError(yaml.YAMLError):
    """A document past one of the limits above: ``problem`` says which, ``problem_mark`` where."""

    def __init__(self, problem: str, mark: yaml.Mark | None):
        self.problem, self.problem_mark = problem, mark
        super().__init__(problem)


class _Budget:
    def __init__(self) -> None:
        self.values = 0
        self.aliases = 0
        self.seen: set[int] = set()  # nodes converted once: meeting one again is an alias
        self.open: set[int] = set()  # nodes being converted: meeting one of these is a recursive alias


class PositionedYaml:
    def __init__(self, data: Any, lines: dict[Path_, int]):
        self.data = data
        self.lines = lines

    def line_of(self, loc: Path_) -> int | None:
        """The line of the deepest known prefix of ``loc`` (1-based)."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return line
        return None


def load(text: str, source: str) -> PositionedYaml:
    """Parse YAML safely; raise ``yaml.YAMLError`` with its own mark on malformed input."""
    # libyaml when PyYAML has it: the pure-Python composer took seconds and tens of MB of (freed, but not
    # given back) memory on a config of 1,000 integrations (bench/); the nodes and their marks are the same.
    # Composing shares the node of an anchor among its aliases (and links a recursive one back to itself): the
    # limits apply while the nodes are converted, depth first, before any value is built twice.
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    lines: dict[Path_, int] = {}
    if node is None:
        return PositionedYaml(None, lines)
    return PositionedYaml(_convert(node, (), lines, yaml.constructor.SafeConstructor(), _Budget()), lines)


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int], ctor: yaml.constructor.SafeConstructor,
             budget: _Budget) -> Any:
    budget.values += 1
    if budget.values > MAX_VALUES:
        raise LimitError(f"more than {MAX_VALUES:,} values once its aliases are expanded (an alias bomb?)",
                         node.start_mark)
    if len(path) >= MAX_DEPTH:
        raise LimitError(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
    key_ = id(node)
    if key_ in budget.open:
        raise LimitError("an alias refers to the value that contains it (a recursive alias)", node.start_mark)
    if key_ in budget.seen and isinstance(node, yaml.CollectionNode):
        budget.aliases += 1
        if budget.aliases > MAX_ALIASES:
            raise LimitError(f"more than {MAX_ALIASES:,} uses of aliases", node.start_mark)
    budget.seen.add(key_)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        budget.open.add(key_)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not supported")
            if not isinstance(key_node, yaml.ScalarNode):
                raise LimitError("a key must be a plain value, not a list or mapping", key_node.start_mark)
            key = _scalar(key_node, ctor)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, ctor, budget)
        budget.open.discard(key_)
        return out
    if isinstance(node, yaml.SequenceNode):
        budget.open.add(key_)
        items = [_convert(item, path + (i,), lines, ctor, budget) for i, item in enumerate(node.value)]
        budget.open.discard(key_)
        return items
    return _scalar(node, ctor)


def _scalar(node: yaml.Node, ctor: yaml.constructor.SafeConstructor) -> Any:
    # Let the safe constructor turn the scalar into int/bool/date/... as PyYAML would.
    return ctor.construct_object(node, deep=True)


def format_loc(loc: Path_) -> str:
    """('integrations', 2, 'mailbox') -> 'integrations[2].mailbox'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
