"""Configuration files of the commands (`--config FILE`, YAML or JSON) and how flags override them.

A file holds a mapping of sections, named as in what the command writes down (a training run's
config.json, a feature store's `params` attribute), so a recorded configuration can be given
back as a file. A flag typed on the command line wins over the file; a flag left at its default
does not.
"""

from __future__ import annotations

from pathlib import Path

from flowcore.errors import UserError


def read_mapping(path: Path, expected: str) -> dict:
    """The mapping in a YAML (or JSON) file; UserError naming the file when it is missing, not
    YAML, or not a mapping (`expected` says what it should hold)."""
    import yaml

    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {expected}")
    return data


def merged(defaults: dict, overrides: dict, where: str) -> dict:
    """`defaults` with `overrides` applied key by key, sections (dicts) merged the same way;
    UserError naming `where` and the key for a key that `defaults` does not have."""
    out = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            raise UserError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(defaults))}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise UserError(
                    f"{where}: {key!r} must be a mapping of {', '.join(sorted(defaults[key]))}"
                )
            out[key] = merged(defaults[key], value, f"{where}: {key}")
        else:
            out[key] = value
    return out
