"""Names people cannot fake: what a name may contain, and when two names are "the same".

Two rules, after the ideas of RFC 8265 (the PRECIS username profiles) and
Unicode TS #39 (security mechanisms):

1. **What a name may contain** (:func:`check_name`).  It is normalized to NFKC
   (so a full-width ``Ａ`` is an ``A``), runs of spaces become one, and it is
   refused if it holds a control character, a format character (zero-width
   joiners, the bidi overrides such as U+202E that turn text around), a
   surrogate, a private-use or unassigned code point, or a pile of combining
   marks.  Each refusal says which character and why.
2. **When two names collide** (:func:`skeleton`).  Names are compared by a
   *skeleton*: case folded, accents dropped, and letters that look alike mapped
   to one (Cyrillic ``а`` and Latin ``a``, digit ``0`` and letter ``o`` ...).
   ``Alice``, ``ALICE``, ``Alíce`` and ``Аlice`` (with a Cyrillic A) share one
   skeleton, so only one of them can be online at a time.

The look-alike table is a small hand-made subset of TS #39's confusables
(Latin, Cyrillic, Greek and digits), enough for a classroom; the full table
would need data the standard library does not ship.
"""

from __future__ import annotations

import unicodedata

__all__ = ["BadName", "RESERVED", "check_name", "skeleton"]

MAX_MARKS = 2                 # combining marks allowed on one base character

# Letters that look like a Latin letter (or digit) in common fonts -> that letter.
_LOOKALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l",
    "ԛ": "q", "ԝ": "w", "ү": "y", "ь": "b", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w",
    # Latin and digits that pass for other letters
    "ı": "i", "ȷ": "j", "ł": "l", "ø": "o", "0": "o", "1": "l", "|": "l", "!": "l", "5": "s", "$": "s",
    "@": "a", "3": "e", "7": "t",
})

RESERVED = frozenset({"teacher", "system", "server", "admin", "moderator"})
"""Skeletons that only the teacher may use (only ``teacher``, in fact, by whoever holds the secret)."""


class BadName(ValueError):
    """A name that is refused; the message says which character and why."""


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def check_name(raw: str, limit: int) -> str:
    """The name to use for ``raw``, normalized; raises :class:`BadName` saying why it is refused."""
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not name:
        raise BadName("a name needs at least one visible character")
    if len(name) > limit:
        raise BadName(f"a name has at most {limit} characters; this one has {len(name)}")
    marks = 0
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise BadName(f"{_describe(ch)} is a control character")
        if category == "Cf":
            raise BadName(f"{_describe(ch)} is invisible (a format or direction character) and could disguise a name")
        if category in ("Cs", "Co", "Cn"):
            raise BadName(f"{_describe(ch)} is not a character a name can hold")
        if category in ("Zl", "Zp"):
            raise BadName("a name is one line")
        marks = marks + 1 if category.startswith("M") else 0
        if marks > MAX_MARKS:
            raise BadName(f"more than {MAX_MARKS} accents on one letter")
    return name


def skeleton(name: str) -> str:
    """What ``name`` looks like, for comparing: two names with one skeleton are taken to be the same person."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", name).casefold())
    plain = "".join(ch for ch in folded if not unicodedata.category(ch).startswith("M"))
    return "".join(plain.translate(_LOOKALIKES).split())
