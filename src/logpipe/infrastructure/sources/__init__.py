"""Sources: where records come from (file tail, stdin, TCP; the generator
lives in the application layer). Each module has a config class the
registry builds from a spec, and the source implements domain.ports.Source.
"""

from logpipe.infrastructure.sources.context import SourceContext

__all__ = ["SourceContext"]
