"""The language a person reads: English or Spanish. Messages are marked `_("...")` in the code
and translated from gettext catalogs (`connector/locale/<lang>/LC_MESSAGES/messages.po`), which
Babel extracts (`scripts/messages`) and compiles (`scripts/setup`). English is the source
language: its catalog is the code itself.

The language is chosen once per process, by the command line (`--lang`), else
`CRM_AUTOMATION_LANG`, else `LANG` (`es_CO.UTF-8` -> Spanish), else English."""

from __future__ import annotations

import gettext as _gettext
import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path

__all__ = ["LANGUAGES", "choose_language", "gettext", "language", "ngettext", "set_language"]

DOMAIN = "messages"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "es")

_current: _gettext.NullTranslations = _gettext.NullTranslations()
_language = "en"


def choose_language(option: str | None, environ: Mapping[str, str]) -> str:
    """The language to speak: `--lang`, else CRM_AUTOMATION_LANG, else LANG, else English.
    A language we have no catalog for falls back to English (a LANG of `fr_FR` is no error)."""
    for value in (option, environ.get("CRM_AUTOMATION_LANG"), environ.get("LANG")):
        if value:
            code = value.split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
            return code if code in LANGUAGES else "en"
    return "en"


def set_language(code: str) -> None:
    global _current, _language
    _language = code if code in LANGUAGES else "en"
    _current = _catalog(_language)


def language() -> str:
    return _language


@cache
def _catalog(code: str) -> _gettext.NullTranslations:
    if code == "en":
        return _gettext.NullTranslations()
    folder = LOCALE_DIR / code / "LC_MESSAGES"
    compiled = folder / f"{DOMAIN}.mo"
    source = folder / f"{DOMAIN}.po"
    if compiled.is_file() and (not source.is_file()
                               or compiled.stat().st_mtime >= source.stat().st_mtime):
        with compiled.open("rb") as f:
            return _gettext.GNUTranslations(f)
    # A checkout where `scripts/setup` has not compiled the catalog yet (or the .po is newer):
    # Babel compiles it in memory, so a message is never shown in the wrong language.
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with source.open("rb") as f:
        catalog = read_po(f, locale=code)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def gettext(message: str) -> str:
    return _current.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _current.ngettext(singular, plural, n)
