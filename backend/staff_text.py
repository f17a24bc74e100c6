"""Text written by citizens, made safe to show to staff: the officers' terminal (`make tickets`)
and the logs operators read.

Control and format characters would act on the reader's terminal instead of being read: ESC
starts sequences that clear the screen, move the cursor over earlier lines, write the
clipboard (OSC 52) or hide a link (OSC 8); C1 controls (U+009B is a one-byte CSI) do the same
on some terminals; a carriage return or backspace overwrites what was printed; U+202E and the
other bidi controls reverse what follows; zero-width characters hide inside words. Each of
them is shown as its escape instead (ESC as the four characters \\x1b, U+202E as \\u202e), so
an officer sees that something odd was sent and nothing happens to the screen.

Escaped: Unicode categories Cc (C0, DEL, C1), Cf (format: bidi, zero-width, soft hyphen, tags),
Cs (lone surrogates, which cannot even be printed), Zl and Zp (U+2028/U+2029, line breaks to
some viewers). Kept only where a text may have several lines (keep_lines=True): newline and
tab; every other line is then indented so that it cannot pass for a line of ours. A web page
for staff must still HTML-escape what this returns.
"""

from __future__ import annotations

import regex

# regex knows the Unicode categories (the re module does not); one pass in C.
_UNSAFE = regex.compile(r"[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]")
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def for_staff(text: str | None, *, keep_lines: bool = False, indent: str = "") -> str:
    """`text` with every control and format character shown as its escape. keep_lines: newline
    and tab stay (each new line starts with `indent`); otherwise the result is one line."""
    if not text:
        return "" if text is None else text

    def replace(match: regex.Match) -> str:
        char = match.group()
        if keep_lines and char == "\n":
            return "\n" + indent
        if keep_lines and char == "\t":
            return char
        return _escape(char)

    return _UNSAFE.sub(replace, text)
