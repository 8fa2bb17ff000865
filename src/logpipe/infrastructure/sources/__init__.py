"""Sources: where records come from (file tail, stdin, TCP; the generator
lives in the application layer). Each module has a config class the
registry builds from a spec, and the source implements domain.ports.Source.

:class:`SourceContext` is loaded on first use: importing a source's spec
module (the registry does, for ``generator`` too) does not import the
application layer's metrics that the context refers to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names

if TYPE_CHECKING:
    from logpipe.infrastructure.sources.context import SourceContext

__all__ = ["SourceContext"]

__getattr__ = lazy_names(__name__, {"SourceContext": f"{__name__}.context"})
