"""Escaping of text (user strings included) for each output format."""

from __future__ import annotations

import html

# CommonMark treats a backslash before any ASCII punctuation as a literal character; these
# are the ones that can start markup mid-line ('$' for renderers with math; '+' and '-'
# only matter at the start of a line, so a leading one is escaped too).
_MD_SPECIAL = set("\\`*_{}[]<>#|~&$!")
_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def md(text: str) -> str:
    """Escape for Markdown: every special character literal, one line (safe in table cells)."""
    out = "".join("\\" + c if c in _MD_SPECIAL else c for c in one_line(text))
    return "\\" + out if out[:1] in ("+", "-") else out


class U(str):
    """A user string (placement, study, error): the renderers escape it for each format."""

    __slots__ = ()


def htm(text: str) -> str:
    return html.escape(str(text), quote=True)


def tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in one_line(text))


def mpl(text: str) -> str:
    """Matplotlib labels: a '$' would start mathtext."""
    return str(text).replace("$", r"\$")
