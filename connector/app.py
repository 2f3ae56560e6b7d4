"""Wiring: settings, rule set, state store, CRM and actions, built once per process and shared
by the command line, `serve` and the Lambda handlers (kept warm between invocations)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.actions import ActionRunner
from connector.core.values import FieldType
from connector.crm import Crm, open_crm
from connector.errors import ConfigurationError, Text
from connector.files import Loaded, load
from connector.formatting import listed
from connector.pipeline import Pipeline, utcnow
from connector.settings import Settings, load_settings
from connector.state import StateStore, StateUrl, open_state
from connector.state.notices import store_notice


@dataclass
class App:
    settings: Settings
    loaded: Loaded
    rules_dir: Path
    mappings_dir: Path
    now: Callable[[], dt.datetime] = utcnow
    senders: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    _state: StateStore | None = None
    _crm: Crm | None = None
    _pipeline: Pipeline | None = None

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def state(self) -> StateStore:
        if self._state is None:
            self._state = open_state(self.settings.state_url)
        return self._state

    @property
    def crm(self) -> Crm:
        if self._crm is None:
            rules = self.loaded.rules
            assert rules is not None
            self._crm = open_crm(self.settings, rules.mapping, rules.closed)
        return self._crm

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            rules = self.loaded.rules
            assert rules is not None
            # The CRM's own types and scales (describe) win over the mapping file's.
            types = self._described()
            rules = dataclasses.replace(rules, mapping=rules.mapping.with_types(types))
            runner = ActionRunner(rules, self.rules_dir, self.mappings_dir, self.settings,
                                  self.senders)
            self._pipeline = Pipeline(rules, self.crm, self.state, runner, now=self.now)
        return self._pipeline

    def _described(self) -> dict[str, FieldType]:
        """`describe`, cached per rule-set version beside a SQLite state (a Lambda keeps it in
        memory while warm): the fields only change when an admin changes the mapping, and the
        check costs a call per object the mapping reaches."""
        cache = None
        folder = StateUrl.parse(self.settings.state_url).folder
        if folder is not None:
            cache = folder / f"describe-{self.loaded.version}.json"
            try:
                data = json.loads(cache.read_text())
                return {name: FieldType(kind, scale) for name, (kind, scale) in data.items()}
            except (OSError, ValueError, TypeError):
                pass
        types = self.crm.describe()
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps({n: [t.kind, t.scale] for n, t in types.items()}))
            except OSError:
                pass  # a cache only
        return types

    def pipeline_store(self, key: str, ids: list[str]) -> bool:
        """Store a webhook notice without touching the CRM (no describe, no login)."""
        return store_notice(self.state, key, ids, self.now())


def build_app(rules_dir: Path = Path("rules"), mappings_dir: Path = Path("mappings"),
              settings: Settings | None = None, *, crm: Crm | None = None,
              state: StateStore | None = None,
              now: Callable[[], dt.datetime] = utcnow,
              senders: dict[str, Callable[..., Any]] | None = None) -> App:
    """Load and check everything; a broken rule set is a ConfigurationError listing it all."""
    settings = settings or load_settings()
    loaded = load(rules_dir, mappings_dir, crm=settings.crm)
    if not loaded.ok:
        # each problem at its file:line, in the person's language
        problems = listed([f.located for f in loaded.findings if f.severity == "error"], "\n")
        raise ConfigurationError(Text("the rules do not pass 'check':\n{problems}",
                                      problems=problems))
    return App(settings, loaded, rules_dir, mappings_dir, now, dict(senders or {}), state, crm)


__all__ = ["App", "build_app"]
