"""ISO 639-1 language codes: what the Realtime API's transcription ``language`` takes.

The API documents ISO-639-1 (``en``), not BCP 47 (``en-US``), so a project's language is
checked against the fixed list of the 184 two-letter codes (the Library of Congress
registry, including the deprecated ``bh``) rather than a pattern, which would let ``xx``
through. Pure.
"""

from __future__ import annotations

import re

ISO_639_1: frozenset[str] = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi
    ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks
    ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl
    nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl
    sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve
    vi vo wa wo xh yi yo za zh zu
    """.split()  # noqa: SIM905 -- 184 codes read better as one block than as 184 strings
)

# A BCP 47-like tag: a two-letter primary subtag, then subtags of 1-8 letters or digits
# (region, script, variant: en-US, zh-Hant-TW, sr-Latn), "-" or "_" between them (en_US
# is how POSIX locales write it). Tags are case-insensitive (RFC 5646 2.1.1).
_TAG = re.compile(r"([A-Za-z]{2})(?:[-_][A-Za-z0-9]{1,8})*")


def iso_639_1(tag: str) -> str | None:
    """The ISO 639-1 code of ``tag`` (``en`` for ``en``, ``EN``, ``en-US``, ``en_us``),
    or None when its primary language is not a two-letter ISO 639-1 code (``xx``,
    ``yue``, ``english``)."""
    match = _TAG.fullmatch(tag)
    if match is None:
        return None
    code = match.group(1).lower()
    return code if code in ISO_639_1 else None
