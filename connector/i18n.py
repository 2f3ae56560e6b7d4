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
from typing import Any

from connector.errors import ConnectorError, RuleFileError, Text

__all__ = ["LANGUAGES", "choose_language", "gettext", "language", "language_of", "ngettext",
           "person_locale", "say", "say_error", "set_language", "translate"]

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


def translate(code: str, message: str) -> str:
    """`message` in language `code`, whatever the process speaks: text written into the CRM
    (the `explanation` field) is in the mapping's language, for the sales reps who read it."""
    return _catalog(code if code in LANGUAGES else "en").gettext(message)


def person_locale(environ: Mapping[str, str]) -> str | None:
    """The locale a person reads in, when their environment names a territory
    (`LANG=es_CO.UTF-8` -> es_CO): how money and dates are shown when the mapping names no
    locale of its own. None for a bare language, C or POSIX."""
    from babel import Locale, UnknownLocaleError

    for value in (environ.get("CRM_AUTOMATION_LANG"), environ.get("LANG")):
        if value:
            name = value.split(".")[0].split("@")[0].replace("-", "_")
            if "_" not in name:
                return None
            try:
                Locale.parse(name)
            except (UnknownLocaleError, ValueError):
                return None
            return name
    return None


def say(message: Any, code: str | None = None) -> str:
    """A message as the person reads it: a `Text` in the chosen language (or in `code`), its
    values too; any other text as it is (a CRM's own words, a file name)."""
    if not isinstance(message, Text):
        return str(message)
    catalog = _current if code is None else _catalog(code if code in LANGUAGES else "en")
    template = catalog.gettext(message.template)
    if not message.values:
        return template
    values = {k: say(v, code) if isinstance(v, Text) else v for k, v in message.values.items()}
    return template.format(**values)


def say_error(exc: BaseException) -> str:
    """An error's message in the person's language; a rule file's keeps its `file:line: `."""
    if not isinstance(exc, ConnectorError):
        return str(exc)
    if isinstance(exc, RuleFileError):
        return exc.where + say(exc.message)
    return say(exc.text)


def language_of(locale: str | None) -> str:
    """The language of a CLDR locale id (`es_CO` -> es); English without one."""
    return choose_language(locale, {}) if locale else "en"


def ngettext(singular: str, plural: str, n: int) -> str:
    return _current.ngettext(singular, plural, n)
