"""Messages in English and Simplified Chinese through gettext.

English text is the message id. The Chinese catalog lives in
``db/locale/zh_CN/LC_MESSAGES/textloom.po`` and is compiled to ``textloom.mo``
with ``uv run invoke i18n.compile``; a test fails when the two disagree.
"""

from __future__ import annotations

import functools
import gettext
import os
from pathlib import Path

DOMAIN = "textloom"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SUPPORTED = ("en", "zh_CN")


def language() -> str:
    """Pick the message language: ``TEXTLOOM_LANG`` first, then the POSIX locale variables."""
    explicit = os.environ.get("TEXTLOOM_LANG", "").strip()
    if explicit:
        return _normalise(explicit)

    # Same precedence as the C library: LC_ALL overrides LC_MESSAGES overrides LANG.
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "").strip()
        if value:
            return _normalise(value)
    return "en"


def _normalise(value: str) -> str:
    return "zh_CN" if value.lower().startswith("zh") else "en"


@functools.cache
def _catalog(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[lang], fallback=True)


def _(message: str, /, **values: object) -> str:
    """Translate ``message`` into the current language, then fill its ``{placeholders}``."""
    text = _catalog(language()).gettext(message)
    return text.format(**values) if values else text


def compile_catalogs() -> list[Path]:
    """Compile every ``.po`` catalog into the ``.mo`` file gettext reads (needs Babel)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po_path in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/*.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        mo_path = po_path.with_suffix(".mo")
        with mo_path.open("wb") as handle:
            write_mo(handle, catalog)
        written.append(mo_path)
    return written
