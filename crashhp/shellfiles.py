"""The distributions' shell config files and recorded commands, read without a shell.

kdump-tools' ``/etc/default/kdump-tools``, Fedora's ``/etc/sysconfig/kdump`` and the
``kexec_cmd`` kdump-config records are shell text. ``parse_assignments`` understands plain
``NAME=value`` lines (quotes, ``export``, ``$NAME`` of names set earlier) and
``split_command`` one command's words as ``eval`` would split them; anything only a shell
could evaluate (commands, conditionals, substitutions, operators) is refused with one line
naming the file and the line or key. Pure, except ``read_text``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

MAX_FILE_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = frozenset(";&|<>()")


class DumpCommandUnknown(Exception):
    """crashhp cannot establish the distribution's dump command; ``str()`` says why."""


class ShellFileError(DumpCommandUnknown):
    """A shell-assignment file crashhp cannot read without a shell; one line, naming it."""

    def __init__(self, path: str, where: str, reason: str) -> None:
        super().__init__(f"{path}: {where}: {reason}")


# ---- shell assignments and words, without a shell ------------------------------------


class _Lexer:
    """Shell words as sh would see them, for the subset that needs no evaluation.

    Quotes, backslashes and ``$NAME``/``${NAME}`` of names given in ``known`` are
    handled; command substitution, other expansions and operators are refused.
    """

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.i = 0

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.i) + 1

    def fail(self, where: str | None, reason: str) -> ShellFileError:
        return ShellFileError(self.path, where or f"line {self.line}", reason)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip_blanks(self) -> None:
        """Spaces, tabs and escaped newlines; then a comment up to the newline."""
        while True:
            c = self.peek()
            if c in (" ", "\t"):
                self.i += 1
            elif self.text.startswith("\\\n", self.i):
                self.i += 2
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return

    def word(self, known: Mapping[str, str] | None, key: str | None) -> str:
        """One word from here; ``known`` is None where no expansion may appear."""
        out: list[str] = []
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\n":
                break
            if c in _OPERATORS:
                raise self.fail(key, f"shell operator {c!r}: not a plain assignment or command")
            if c == "'":
                end = self.text.find("'", self.i + 1)
                if end < 0:
                    raise self.fail(key, "unterminated single quote")
                out.append(self.text[self.i + 1 : end])
                self.i = end + 1
            elif c == '"':
                self.i += 1
                out.append(self._double_quoted(known, key))
            elif not self._special(out, known, key, escapable=None):
                out.append(c)
                self.i += 1
        return "".join(out)

    def _special(
        self,
        out: list[str],
        known: Mapping[str, str] | None,
        key: str | None,
        escapable: str | None,
    ) -> bool:
        """A backslash, ``$`` or backquote here (outside or inside double quotes)."""
        c = self.text[self.i]
        if c == "\\" and (escapable is None or self.text[self.i + 1 : self.i + 2] in escapable):
            nxt = self.text[self.i + 1 : self.i + 2]
            self.i += 2
            if nxt != "\n":
                out.append(nxt)  # backslash-newline is a line continuation
        elif c == "$":
            out.append(self._expand(known, key))
        elif c == "`":
            raise self.fail(key, "command substitution (`...`) needs a shell")
        else:
            return False
        return True

    def _double_quoted(self, known: Mapping[str, str] | None, key: str | None) -> str:
        out: list[str] = []
        while True:
            if self.i >= len(self.text):
                raise self.fail(key, "unterminated double quote")
            c = self.text[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if not self._special(out, known, key, escapable='"\\$`\n'):
                out.append(c)
                self.i += 1

    def _expand(self, known: Mapping[str, str] | None, key: str | None) -> str:
        rest = self.text[self.i + 1 :]
        braced = rest.startswith("{")
        match = _NAME.match(rest[1:] if braced else rest)
        if match is None or (braced and not rest[1 + match.end() :].startswith("}")):
            raise self.fail(key, "an expansion other than $NAME or ${NAME} needs a shell")
        name = match.group()
        if known is None:
            raise self.fail(key, f"${name}: a recorded command with an expansion needs a shell")
        if name not in known:
            raise self.fail(key, f"${name} is not set earlier in this file")
        self.i += 1 + match.end() + (2 if braced else 0)
        return known[name]


def parse_assignments(text: str, path: str) -> dict[str, str]:
    """``NAME=value`` lines of a shell config file, as sh would assign them. Pure.

    Comments, blank lines, quotes, ``export NAME=value`` and ``$NAME`` of names set
    earlier in the file are understood; anything else (commands, conditionals, command
    substitution) raises ShellFileError naming the file and the line or key.
    """
    lex = _Lexer(text, path)
    values: dict[str, str] = {}
    while True:
        lex.skip_blanks()
        if lex.i >= len(lex.text):
            return values
        if lex.peek() in ("\n", ";"):
            lex.i += 1
            continue
        match = _NAME.match(lex.text, lex.i)
        if (
            match
            and match.group() == "export"
            and lex.text[match.end() : match.end() + 1]
            in (
                " ",
                "\t",
            )
        ):
            lex.i = match.end()
            lex.skip_blanks()
            match = _NAME.match(lex.text, lex.i)
        if match is None or not lex.text.startswith("=", match.end()):
            line = lex.text[lex.i :].split("\n", 1)[0]
            raise lex.fail(None, f"not a NAME=value assignment: {line[:60]!r}")
        key = match.group()
        lex.i = match.end() + 1
        values[key] = lex.word(values, key)


def split_command(text: str, path: str) -> list[str]:
    """The words of one recorded command line, as ``eval`` would split them. Pure.

    Raises ShellFileError where the command needs a shell to mean anything (expansions,
    operators, more than one command).
    """
    lex = _Lexer(text, path)
    words: list[str] = []
    while True:
        lex.skip_blanks()
        if lex.i >= len(lex.text):
            return words
        if lex.peek() == "\n":
            if lex.text[lex.i :].strip():
                raise lex.fail(None, "more than one command")
            return words
        words.append(lex.word(None, None))


def read_text(path: Path, shown: str) -> str:
    """A small text file, or DumpCommandUnknown naming it."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DumpCommandUnknown(f"{shown}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DumpCommandUnknown(f"{shown}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DumpCommandUnknown(f"{shown}: not UTF-8 text (byte {exc.start})") from None
