"""Specs to components: ``"file:/var/log/out.ndjson"`` -> a FileSink.

A spec is ``SCHEME`` or ``SCHEME:TARGET`` (``SCHEME://TARGET`` reads the
same: ``file:out.ndjson``, ``file://out.ndjson`` and ``file:///tmp/x`` all
name files). Each scheme is a config class with

- ``scheme`` (``"file"``), ``usage`` (``"file:PATH"``, shown in errors and
  help) and ``takes_target`` (whether a target is required or refused);
- ``from_target(target, settings) -> config``, raising ValueError with a
  short reason (``"has no PATH"``) when the target is malformed. ``settings``
  is whatever the caller of ``parse``/``open`` passed, None by default: the
  run's PipelineConfig for sinks (rotation, NATS stream options), a source
  context for sources;
- ``build() -> component``, raising SinkError (or OSError) when the target
  cannot be opened.

A :class:`Registry` holds the classes of one kind. :data:`SINKS` has the
built-in sinks and :data:`SOURCES` the built-in sources. A config class is
added with ``SINKS.register(ConfigClass)``; the built-in ones are
registered *by name* instead:

    SINKS.register_lazy("nats", "nats://HOST:PORT/SUBJECT", True,
                        "logpipe.infrastructure.sinks.nats_config:NatsSinkConfig")

so their modules are imported only when a spec names their scheme. A run
from a file never loads the TCP source (socket, select), the NATS specs'
parsers (urllib.parse, ipaddress) or the stdin source, which took ~15 ms
of every start-up when the registry imported them all, nor the
generator's config class (~1 ms to define when it was a dataclass;
``GeneratorSourceConfig`` here loads it too). Listing the known
schemes, and every error about an unknown or malformed spec, needs only
the names. The first use of a lazy scheme checks that its class says the
same scheme, usage and takes_target as its registration
(tests/infrastructure/test_registry.py loads every one).

Every error is a :class:`~logpipe.exceptions.ConfigError` with one line
naming the flag (or config key), the spec and the known schemes:
``--sink: unknown sink 'kafka://x' (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from logpipe._lazy import lazy_names
from logpipe.domain.config import PipelineConfig
from logpipe.domain.ports import Sink, Source
from logpipe.domain.records import frozen
from logpipe.exceptions import ConfigError, LogpipeError

if TYPE_CHECKING:
    from logpipe.infrastructure.sources.generator import GeneratorSourceConfig

__all__ = [
    "ComponentConfig",
    "GeneratorSourceConfig",
    "LazyConfig",
    "Registry",
    "SINKS",
    "SOURCES",
    "Spec",
    "open_sink",
    "open_source",
    "parse_sink",
    "parse_source",
]

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class ComponentConfig(Protocol[T_co]):
    """What a registered config class provides (see the module docstring)."""

    scheme: ClassVar[str]
    usage: ClassVar[str]
    takes_target: ClassVar[bool]

    @classmethod
    def from_target(cls, target: str | None, settings: Any = None) -> ComponentConfig[T_co]:
        """The config for ``SCHEME:target``; ValueError(reason) if malformed."""
        ...

    def build(self, settings: Any = None) -> T_co:
        """Open the component; SinkError or OSError if its target cannot be opened."""
        ...


@frozen
class Spec:
    """A spec split into its parts.

    Attributes:
        text: the spec as given.
        scheme: the part before the first ``:``, lowercased.
        target: the part after it without a leading ``//``; None if no ``:``.
    """

    text: str
    scheme: str
    target: str | None

    @classmethod
    def parse(cls, text: str) -> Spec:
        """Split ``text``; never fails (unknown schemes are the registry's call)."""
        scheme, colon, rest = text.partition(":")
        target = rest.removeprefix("//") if colon else None
        return cls(text=text, scheme=scheme.lower(), target=target)


@frozen
class LazyConfig:
    """A scheme registered by name: its config class is imported on first use.

    Attributes:
        scheme, usage, takes_target: what the class will say (checked when loaded).
        path: ``"package.module:ClassName"``.
    """

    scheme: str
    usage: str
    takes_target: bool
    path: str

    def load(self) -> type[ComponentConfig[Any]]:
        """Import the class; RuntimeError if it disagrees with this registration."""
        module, _, name = self.path.partition(":")
        config = getattr(importlib.import_module(module), name)
        said = (config.scheme, config.usage, config.takes_target)
        if said != (self.scheme, self.usage, self.takes_target):
            raise RuntimeError(
                f"{self.path} says {said}, registered as {(self.scheme, self.usage, self.takes_target)}"
            )
        return config


class Registry(Generic[T]):
    """The config classes of one kind of component, by scheme.

    Args:
        kind: ``"sink"`` or ``"source"``, as errors name it.
        label: how errors name the setting by default, e.g. ``"--sink"``.
    """

    def __init__(self, kind: str, label: str) -> None:
        self.kind = kind
        self.label = label
        self._configs: dict[str, type[ComponentConfig[T]] | LazyConfig] = {}
        self._loaded: dict[str, type[ComponentConfig[T]]] = {}  # the LazyConfig entries imported so far

    def register(self, config: type[ComponentConfig[T]]) -> type[ComponentConfig[T]]:
        """Add a config class (usable as a class decorator).

        Raises:
            ValueError: its scheme is taken already.
        """
        self._add(config.scheme, config)
        return config

    def register_lazy(self, scheme: str, usage: str, takes_target: bool, path: str) -> None:
        """Add the config class at ``path`` (``"module:Class"``), imported when a spec names ``scheme``.

        Raises:
            ValueError: the scheme is taken already.
        """
        self._add(scheme, LazyConfig(scheme, usage, takes_target, path))

    def config_class(self, scheme: str) -> type[ComponentConfig[T]]:
        """The config class of a registered scheme, imported if it was registered by name.

        Raises:
            KeyError: no such scheme.
        """
        entry = self._configs[scheme]
        if not isinstance(entry, LazyConfig):
            return entry
        loaded = self._loaded.get(scheme)
        if loaded is None:
            loaded = self._loaded[scheme] = entry.load()
        return loaded

    def _add(self, scheme: str, entry: type[ComponentConfig[T]] | LazyConfig) -> None:
        if scheme in self._configs:
            raise ValueError(f"{self.kind} scheme {scheme!r} is registered already")
        self._configs[scheme] = entry

    @property
    def schemes(self) -> tuple[str, ...]:
        """The registered schemes, sorted."""
        return tuple(sorted(self._configs))

    def known(self) -> str:
        """The usages, sorted, as errors list them: ``file:PATH, null, stdout``."""
        return ", ".join(sorted(config.usage for config in self._configs.values()))

    def parse(
        self, spec: str, *, label: str | None = None, settings: Any = None
    ) -> ComponentConfig[T]:
        """The config a spec describes, without opening anything.

        Args:
            spec: e.g. ``"file:out.ndjson"``.
            label: how the error names the setting (default: :attr:`label`).
            settings: passed to the config class's ``from_target``.

        Raises:
            ConfigError: unknown scheme, or a target missing, unwanted or malformed.
        """
        label = label or self.label
        parsed = Spec.parse(spec)
        config = self._configs.get(parsed.scheme)  # a class or a LazyConfig: both name their usage
        if config is None:
            raise ConfigError(
                f"{label}: unknown {self.kind} {spec!r} (known: {self.known()}{self._hint(parsed)})"
            )
        if config.takes_target and not parsed.target:
            reason = f"needs a target ({config.usage})"
            if ":" in config.usage:
                reason = f"has no {config.usage.partition(':')[2].removeprefix('//')}"
            raise ConfigError(f"{label}: {spec!r} {reason} (known: {self.known()})")
        if not config.takes_target and parsed.target is not None:
            raise ConfigError(
                f"{label}: {spec!r} takes nothing after {parsed.scheme!r} (known: {self.known()})"
            )
        try:
            return self.config_class(parsed.scheme).from_target(parsed.target, settings)
        except ValueError as exc:
            raise ConfigError(f"{label}: {spec!r} {exc} (use {config.usage})") from None

    def open(self, spec: str, *, label: str | None = None, settings: Any = None) -> T:
        """Parse ``spec`` (with ``settings``) and build the component.

        Raises:
            ConfigError: as :meth:`parse`, or the target cannot be opened
                (``--sink: cannot open file:x/y: directory 'x' does not exist ...``).
        """
        label = label or self.label
        config = self.parse(spec, label=label, settings=settings)
        try:
            return config.build(settings)
        except (LogpipeError, OSError) as exc:
            if isinstance(exc, OSError):
                detail = f"cannot open {spec!r}: {exc.strerror or exc}"
            else:
                detail = str(exc)
            raise ConfigError(f"{label}: {detail}") from exc

    def _hint(self, parsed: Spec) -> str:
        import difflib  # only for errors: ~1 ms of start-up

        close = difflib.get_close_matches(parsed.scheme, self._configs, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {self._configs[close[0]].usage}?"
        if parsed.target is None and "file" in self._configs and any(c in parsed.text for c in "/."):
            return f"; did you mean file:{parsed.text}?"
        return ""


# --- sinks -----------------------------------------------------------------------

_SINKS_PACKAGE = "logpipe.infrastructure.sinks"
SINKS: Registry[Sink] = Registry("sink", "--sink")
SINKS.register_lazy("file", "file:PATH", True, f"{_SINKS_PACKAGE}.file:FileSinkConfig")
SINKS.register_lazy(  # parsing only: the sink itself (asyncio, nats-py) is imported by build()
    "nats", "nats://HOST:PORT/SUBJECT", True, f"{_SINKS_PACKAGE}.nats_config:NatsSinkConfig"
)
SINKS.register_lazy("null", "null", False, f"{_SINKS_PACKAGE}.null:NullSinkConfig")
SINKS.register_lazy("stdout", "stdout", False, f"{_SINKS_PACKAGE}.stdout:StdoutSinkConfig")


def parse_sink(
    spec: str, *, label: str = "--sink", settings: PipelineConfig | None = None
) -> ComponentConfig[Sink]:
    """The sink config a spec describes, checked but not opened (for ``--dry-run``).

    Raises:
        ConfigError: one line naming ``label``, the spec and the known sinks.
    """
    return SINKS.parse(spec, label=label, settings=settings)


def open_sink(
    spec: str, *, label: str = "--sink", settings: PipelineConfig | None = None
) -> Sink:
    """Open the sink a spec names: ``null``, ``stdout``, ``file:PATH``.

    Args:
        spec: the sink spec.
        label: how errors name the setting, e.g. ``"--sink"`` or
            ``"config.toml: sink"``.
        settings: the run's configuration, for sink options beyond the spec.

    Raises:
        ConfigError: one line: unknown scheme (listing the known ones), a
            missing path, or a file that cannot be opened.
    """
    return SINKS.open(spec, label=label, settings=settings)


# --- sources ---------------------------------------------------------------------

_SOURCES_PACKAGE = "logpipe.infrastructure.sources"
SOURCES: Registry[Source | None] = Registry("source", "--source")
SOURCES.register_lazy("file", "file:PATH", True, f"{_SOURCES_PACKAGE}.file:FileSourceConfig")
SOURCES.register_lazy("generator", "generator", False, f"{_SOURCES_PACKAGE}.generator:GeneratorSourceConfig")
SOURCES.register_lazy(
    "nats",
    "nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME",
    True,
    f"{_SOURCES_PACKAGE}.nats_config:NatsSourceConfig",
)
SOURCES.register_lazy("stdin", "stdin", False, f"{_SOURCES_PACKAGE}.stdin:StdinSourceConfig")
SOURCES.register_lazy("tcp", "tcp://HOST:PORT", True, f"{_SOURCES_PACKAGE}.tcp:TcpSourceConfig")

__getattr__ = lazy_names(__name__, {"GeneratorSourceConfig": f"{_SOURCES_PACKAGE}.generator"})


def parse_source(
    spec: str, *, label: str = "--source", settings: Any = None
) -> ComponentConfig[Source | None]:
    """The source config a spec describes, checked but not opened.

    Raises:
        ConfigError: one line naming ``label``, the spec and the known sources.
    """
    return SOURCES.parse(spec, label=label, settings=settings)


def open_source(spec: str, *, label: str = "--source", settings: Any = None) -> Source | None:
    """Open the source a spec names; None for ``generator`` (the pipeline's own).

    ``settings`` is handed to the source's config class (e.g. a SourceContext).

    Raises:
        ConfigError: one line naming ``label``, the spec and the known sources.
    """
    return SOURCES.open(spec, label=label, settings=settings)
