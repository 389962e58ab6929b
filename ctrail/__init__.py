"""ContainerTrail core: the event model, the bus, the stage runner, settings and the CLI."""

__version__ = "0.1.0"
