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
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path_, int] = {}
    if node is None:
        return PositionedYaml(None, lines)
    return PositionedYaml(_convert(node, (), lines), lines)


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not supported")
            key = _scalar(key_node)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    # Let the safe constructor turn the scalar into int/bool/date/... as PyYAML would.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def format_loc(loc: Path_) -> str:
    """('integrations', 2, 'mailbox') -> 'integrations[2].mailbox'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
