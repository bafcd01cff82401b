"""Edit experiments.toml in place, keeping the user's comments and layout.

The TUI's new / duplicate / edit forms save through here. tomli-w would rewrite the whole
file and drop every comment; tomlkit edits the parsed document and writes the rest back
byte for byte. Every edit is checked with the loader's own rules (`config.parse`) before it
is returned, so a saved file always loads. No textual, no torch: this is plain data work.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Item, Table

from ..core.config import (
    EXPERIMENT_KEYS,
    ConfigError,
    ExperimentFile,
    check_value,
    parse,
)
from ..core.settings import declared
from ..runs.store import atomic_write_bytes

STRING_KEYS = frozenset(k for k in EXPERIMENT_KEYS if declared(k).type == "str")


def read_value(key: str, raw: str) -> Any:
    """One form field as a setting value: TOML (`0.01`, `true`, `"cpu"`) or a bare string.

    An empty field means "not set here" and returns None. Raises ConfigError with a one-line
    message naming the key.
    """
    raw = raw.strip()
    if raw == "":
        return None
    if key not in EXPERIMENT_KEYS:
        raise ConfigError(f"unknown key {key!r}")
    is_str = key in STRING_KEYS
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if not is_str:
            raise ConfigError(f"{key!r}: {raw!r} is not a valid value") from None
        value = raw
    if is_str and not isinstance(value, str):
        value = raw  # a title such as 2024 is text, not a number
    checked = check_value(key, value)
    return dict(checked) if key == "model_args" else checked  # written back as a table


def show_value(value: Any) -> str:
    """A value as the form shows it: strings bare, everything else as TOML writes it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # model_args: one line, as the file writes it
        table = tomlkit.inline_table()
        table.update(value)
        return str(table.as_string())
    text: str = tomlkit.item(value).as_string()
    return text


BOM = "\ufeff"  # a byte-order mark some editors put first; the loader skips it, edits keep it


def own_values(text: str) -> list[dict[str, Any]]:
    """Each [[experiment]]'s own keys as written in the file (defaults not merged in)."""
    doc = tomllib.loads(text.removeprefix(BOM))
    return [dict(t) for t in doc.get("experiment", [])]


def _experiments(doc: tomlkit.TOMLDocument) -> AoT:
    aot = doc.get("experiment")
    if not isinstance(aot, AoT):
        raise ConfigError("the file has no [[experiment]] tables to edit")
    return aot


def _set(table: Table, key: str, value: Any) -> None:
    """Set `key` in place, keeping an existing line's comment (the key must be present)."""
    old = table.item(key)
    new = tomlkit.item(value)
    if isinstance(old, Item):  # not a table split across the file: no one line to keep
        for part in ("indent", "comment_ws", "comment", "trail"):
            setattr(new.trivia, part, getattr(old.trivia, part))
    table[key] = new


def _with_added(table: Table, added: dict[str, Any]) -> Table:
    """A copy of `table` with the `added` keys after its last key.

    Comments and blank lines after a table's last key introduce whatever follows it in the
    file, so new keys go before them, not at the very end as `Table.append` would put them.
    Built from tomlkit's public item classes only.
    """
    body = table.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=-1)
    rebuilt = Table(Container(True), table.trivia, is_aot_element=table.is_aot_element())
    for name, item in body[: last + 1]:
        rebuilt.value.append(name, item)
    for key, value in added.items():
        rebuilt.append(key, value)
    for name, item in body[last + 1 :]:
        rebuilt.value.append(name, item)
    return rebuilt


def update_experiment(text: str, index: int, values: dict[str, Any]) -> str:
    """Text with the `index`-th [[experiment]] holding exactly `values` (None = remove)."""
    doc = tomlkit.parse(text)
    aot = _experiments(doc)
    table = aot[index]
    for key in [k for k in table if k not in values or values[k] is None]:
        del table[key]
    order = [k for k in EXPERIMENT_KEYS if k in values] + [
        k for k in values if k not in EXPERIMENT_KEYS
    ]
    added: dict[str, Any] = {}
    for key in order:
        if values[key] is None:
            continue
        if key in table:
            _set(table, key, values[key])
        else:
            added[key] = values[key]
    if added:
        aot[index] = _with_added(table, added)
    return tomlkit.dumps(doc)


def append_experiment(text: str, values: dict[str, Any]) -> str:
    """Text with a new [[experiment]] at the end, keys in the loader's order."""
    ordered = {k: values[k] for k in EXPERIMENT_KEYS if values.get(k) is not None}
    block = tomlkit.dumps({"experiment": [ordered]})
    body = text.rstrip("\n")
    return (body + "\n\n" if body else "") + block


def save_experiment(path: Path, values: dict[str, Any], index: int | None = None) -> ExperimentFile:
    """Write `values` into the file at `path` as a new experiment (index None) or over the
    `index`-th one, after checking the result with the loader; returns the file as loaded.

    Raises ConfigError (nothing written) when the result would not load.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    bom = BOM if text.startswith(BOM) else ""
    text = text.removeprefix(BOM)
    new = (
        append_experiment(text, values) if index is None else update_experiment(text, index, values)
    )
    loaded = parse(new, path)  # the loader's rules, positions included
    atomic_write_bytes(path, (bom + new).encode("utf-8"))
    return loaded
