"""Lazy name -> 'module:attr' registries, so a command imports only the component it uses."""

import importlib

from diffcli.errors import unknown_choice


def resolve(kind: str, table: dict[str, str], name: str):
    """Import and return the object registered under `name`, or raise a usage error naming the choices."""
    if name not in table:
        raise unknown_choice(kind, name, table)
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)
