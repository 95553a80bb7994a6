"""labkit: integration testing on live services, taught in notebooks."""

__version__ = "0.1.0"
