"""Imports every model family so its registrations run. Add a new family module here."""

from . import classic, densenet, inception, resnet  # noqa: F401
