"""Terminal text: what reaches the terminal from files a user may not have written."""

from __future__ import annotations

import pytest

from cnntui.core import text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;X\x07\x1b[2J", "\\x1b]0;X\\x07\\x1b[2J"),  # retitle and clear the terminal
        ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),
        ("\x7f\x9b", "\\x7f\\x9b"),  # DEL, and C1's one-byte CSI
        ("report\u202etxt.exe", "report\\u202etxt.exe"),  # a bidi override
        ("a\u2028b", "a\\u2028b"),
        ("基准配置 👩‍💻 ok", "基准配置 👩‍💻 ok"),  # CJK, emoji with its joiner: shown as is
        (3, "3"),
        (None, "None"),
    ],
)
def test_safe_escapes_control_characters_only(raw, shown) -> None:
    assert text.safe(raw) == shown
    assert text.unsafe_char(text.safe(raw)) is None


@pytest.mark.parametrize("value", ["x", "0.5", True, None, [1], {"a": 1}, float("nan"), 10**400])
def test_numbers_of_the_wrong_type_show_as_a_dash(value) -> None:
    assert text.pct(value) == text.num(value) == text.seconds(value) == "-"
    assert text.count(value) == "-" or isinstance(value, int)


def test_numbers_show_as_before() -> None:
    assert (text.pct(0.5), text.num(2.30251), text.seconds(75), text.count(62006)) == (
        "50.00%",
        "2.3025",
        "1:15",
        "62,006",
    )
