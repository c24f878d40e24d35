"""The engine's configuration error, in a module of its own so the layout arithmetic (parallel/degrees.py) and the
strategy registry raise it without importing pydantic: `chitu --help` lists the strategies at no import cost."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad engine configuration or an unsupported combination; `errors` holds one line per problem."""

    def __init__(self, errors: str | list[str]):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))
