"""The ``generator`` source spec: the pipeline's own producer of synthetic logs.

The producer itself lives in the application layer
(:class:`logpipe.application.producer.GeneratorSource`); this module only
gives the registry its spec, registered by name like every other built-in
one, so runs from other sources do not define its config class.
"""

from __future__ import annotations

from typing import ClassVar

from logpipe.domain.records import frozen

__all__ = ["GeneratorSourceConfig"]


@frozen
class GeneratorSourceConfig:
    """Spec ``generator``: the pipeline's own producer of synthetic logs.

    It is built into the application layer, so :meth:`build` returns None,
    which ``Pipeline(source=None)`` takes to mean "run the generator".
    """

    scheme: ClassVar[str] = "generator"
    usage: ClassVar[str] = "generator"
    takes_target: ClassVar[bool] = False

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> GeneratorSourceConfig:
        """The config for spec ``generator``."""
        return cls()

    def build(self, settings: object = None) -> None:
        """None: the pipeline's built-in generator."""
        return None
