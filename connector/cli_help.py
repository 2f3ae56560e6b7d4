"""`--help` and usage errors in the person's language.

Help texts are declared at import, before `main()` has chosen the language: they are marked
`N_("...")` (extracted into the catalog like `_()`) and said when the command line runs, on the
click commands typer builds for that run. The framework's own words (typer's headings, click's
usage errors) are written below in the framework's English, as the catalog's msgids: a usage
error is said by matching its English against them."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import typer
from typer import rich_utils
from typer._click.core import Command  # typer 0.29 vendors its click
from typer._click.exceptions import ClickException, UsageError
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from connector.i18n import gettext as _

__all__ = ["N_", "USAGE_ERRORS", "run", "said_usage_error"]


def N_(message: str) -> str:  # gettext's name for a message marked now, said later
    """A text for the catalog, said at run time: help texts exist before the language does."""
    return message


# typer's rich help reads these module constants each time it prints.
_HEADINGS = {
    "ARGUMENTS_PANEL_TITLE": N_("Arguments"),
    "OPTIONS_PANEL_TITLE": N_("Options"),
    "COMMANDS_PANEL_TITLE": N_("Commands"),
    "ERRORS_PANEL_TITLE": N_("Error"),
    "ABORTED_TEXT": N_("Aborted."),
    "RICH_HELP": N_("Try [blue]'{command_path} {help_option}'[/] for help."),
    "DEFAULT_STRING": N_("[default: {}]"),
    "ENVVAR_STRING": N_("[env var: {}]"),
    "REQUIRED_LONG_STRING": N_("[required]"),
    "DEPRECATED_STRING": N_("(deprecated) "),
}
_USAGE = N_("Usage: ")
# The framework's words our help texts meet where they stand: the usage line's placeholders and
# the help option's help.
_FOUND = (N_("[OPTIONS]"), N_("COMMAND [ARGS]..."), N_("Show this message and exit."))

# click's and typer's usage errors, as they write them; a `{reason}` is itself one of them (or
# our own message, already said). The more specific first: the first that matches is said.
USAGE_ERRORS = (
    N_("Invalid value for {hint}: {reason}"),
    N_("Invalid value: {reason}"),
    N_("Missing argument {name}. Choose from:\n\t{choices}"),
    N_("Missing option {name}. Choose from:\n\t{choices}"),
    N_("Missing argument {name}."),
    N_("Missing option {name}."),
    N_("No such option: {name} (Possible options: {options})"),
    N_("No such option: {name}"),
    N_("No such command {name}."),
    N_("Missing command."),
    N_("Got unexpected extra argument(s) ({arguments})"),
    N_("Option {name} requires an argument."),
    N_("Option {name} does not take a value."),
    N_("Value error, {value} is not one of {choices}."),
    N_("Input should be a valid integer, unable to parse string as an integer"),
    N_("Input should be greater than or equal to {number}"),
    N_("file {path} does not exist."),
    N_("file {path} is a directory."),
    N_("file {path} is not readable."),
)


@cache
def _pattern(template: str) -> re.Pattern[str]:
    regex = "".join(re.escape(literal) + (f"(?P<{name}>.+?)" if name else "")
                    for literal, name, _spec, _conv in string.Formatter().parse(template))
    return re.compile(regex, re.DOTALL)


def said_usage_error(message: str) -> str:
    """A usage error of the framework in the person's language; one it does not list stays
    as the framework wrote it (in English) rather than be guessed."""
    for template in USAGE_ERRORS:
        found = _pattern(template).fullmatch(message)
        if found:
            values = found.groupdict()
            if "reason" in values:
                values["reason"] = said_usage_error(values["reason"])
            return _(template).format(**values)
    return message


class _Formatter(HelpFormatter):
    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, _(_USAGE) if prefix is None else prefix)


class _Context(typer.Context):
    formatter_class = _Formatter


def run(app: typer.Typer, args: list[str], prog_name: str) -> int:
    """Run the command line in the chosen language and return its exit code. typer's own
    errors (usage, abort) are shown here, not by typer, so that they are said in it too."""
    command = typer.main.get_command(app)  # built anew for each run: nothing said outlives it
    _say_help(command)
    with _framework_words():
        try:
            code = command.main(args=args, prog_name=prog_name, standalone_mode=False)
        except ClickException as error:
            _show(error)
            return error.exit_code
        except typer.Abort:
            rich_utils.rich_abort_error()
            return 1
    return code if isinstance(code, int) else 0


def _say_help(command: Command) -> None:
    command.context_class = _Context
    command.help = command.help and _(command.help)
    command.short_help = command.short_help and _(command.short_help)
    if command.options_metavar:
        command.options_metavar = _(command.options_metavar)
    # click makes the help option when a context first asks for it, then keeps it
    help_option = command.get_help_option(_Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        help_text = getattr(param, "help", None)
        if help_text:
            param.help = _(help_text)  # type: ignore[attr-defined]
    if isinstance(command, TyperGroup):
        if command.subcommand_metavar:
            command.subcommand_metavar = _(command.subcommand_metavar)
        for sub in command.commands.values():
            _say_help(sub)


@contextmanager
def _framework_words() -> Iterator[None]:
    """typer's headings in the chosen language while the command line runs, then as they
    were (a test, or a program that embeds the CLI, runs it again in another language)."""
    before = {name: getattr(rich_utils, name) for name in _HEADINGS}
    try:
        for name, english in _HEADINGS.items():
            setattr(rich_utils, name, _(english))
        yield
    finally:
        for name, value in before.items():
            setattr(rich_utils, name, value)


def _show(error: ClickException) -> None:
    """The framework's error as typer shows it (usage, hint, framed message), said."""
    if type(error).__name__ == "NoArgsIsHelpError":  # as typer: its help is printed already
        return
    text = said_usage_error(error.format_message())
    said = UsageError(text, error.ctx) if isinstance(error, UsageError) else ClickException(text)
    rich_utils.rich_format_error(said)
