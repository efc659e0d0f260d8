"""YAML loading that remembers where each key came from, so a config error can name its line."""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]


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
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    lines: dict[Path_, int] = {}
    if node is None:
        return PositionedYaml(None, lines)
    return PositionedYaml(_convert(node, (), lines, yaml.constructor.SafeConstructor()), lines)


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int], ctor: yaml.constructor.SafeConstructor) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not supported")
            key = _scalar(key_node, ctor)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines, ctor) for i, item in enumerate(node.value)]
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
