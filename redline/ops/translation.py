"""Machine translation: an interface with offline backends, none by default.

Each side writes in its own language and the original stays authoritative (SCENARIO.md). A
TRANSLATION envelope attaches a translation by a named translator to any message; a person may
ask a machine for a draft, but only an offline backend installed on the station's own machine is
ever used: the text of a hotline must not leave it. Backends are found at run time; with none
installed, asking for one says so and nothing is sent.
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

from redline.errors import ConfigError


class Translator(Protocol):
    name: str

    def translate(self, text: str, source: str, target: str) -> str: ...


class ArgosTranslator:
    """Argos Translate (offline, OpenNMT models installed as packages on this machine)."""

    name = "argos"

    def translate(self, text: str, source: str, target: str) -> str:
        import argostranslate.translate

        result: str = argostranslate.translate.translate(text, source, target)
        return result


def available() -> list[Translator]:
    found: list[Translator] = []
    if importlib.util.find_spec("argostranslate") is not None:
        found.append(ArgosTranslator())
    return found


def machine_translate(text: str, source: str, target: str) -> tuple[str, str]:
    """(translation, backend name), or ConfigError when no offline backend is installed."""
    backends = available()
    if not backends:
        raise ConfigError(
            "no offline machine translation is installed on this station (redline ships none by default); "
            "install one (pip install argostranslate, plus its language package), or translate by hand"
        )
    backend = backends[0]
    return backend.translate(text, source, target), backend.name
