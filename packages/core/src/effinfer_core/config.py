"""Configs and profiles: YAML (or JSON) files merged over a package's defaults, checked key by key.

Every package keeps its profiles as ``packages/<pkg>/configs/<profile>.yaml`` (quick, cpu, full, and any others a
user adds). A file may start from another with ``extends: other.yaml`` (a path relative to it); its own keys override
the base's, mappings merge key by key, and a key the defaults do not have is an error that names the known keys.
YAML 1.1 reads ``5e-4`` as text: where the default is a number, such text is read as one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A malformed config (unknown key, bad value, unreadable file)."""


def load_config(
    source: str | Path | Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    replace_whole: Iterable[str] = (),
) -> dict[str, Any]:
    """``defaults`` updated by a file (or mapping) and then by ``overrides`` (None values ignored). Mappings named in
    ``replace_whole`` are taken whole from the file rather than merged key by key (their owner checks their keys)."""
    layers: list[Mapping[str, Any]] = []
    if isinstance(source, Mapping):
        layers = [source]
    elif source is not None:
        layers = config_layers(Path(source))
    whole = frozenset(replace_whole)
    config = copy.deepcopy(dict(defaults))
    for layer in [*layers, {k: v for k, v in (overrides or {}).items() if v is not None}]:
        config = merge(config, layer, whole=whole)
    return config


def profile_path(configs_dir: Path, profile: str) -> Path:
    path = configs_dir / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in configs_dir.glob("*.yaml"))) or "none"
        raise ConfigError(f"no profile {profile!r} in {configs_dir} (profiles there: {known})")
    return path


def merge(
    base: Mapping[str, Any], over: Mapping[str, Any], where: str = "", whole: frozenset[str] = frozenset()
) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and key not in whole:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{where}{key}' must be a mapping, got {value!r}")
            out[key] = merge(base[key], value, f"{where}{key}.", whole)
        elif key in whole and isinstance(value, Mapping):
            out[key] = {k: numbers_read(base[key].get(k), v, f"{where}{key}.{k}") for k, v in value.items()}
        else:
            out[key] = numbers_read(base[key], value, f"{where}{key}")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers_read(default: Any, value: Any, name: str) -> Any:
    """``value`` with text read as a number where the default is a number or a list of numbers."""
    if isinstance(value, str) and _is_number(default):
        return _number(value, type(default), name)
    if isinstance(value, list) and isinstance(default, list) and default and all(map(_is_number, default)):
        return [numbers_read(default[0], v, name) for v in value]
    return copy.deepcopy(value)


def _number(text: str, kind: type, name: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"config key '{name}' must be a number, got {text!r}") from None
    if kind is int:
        if not value.is_integer():
            raise ConfigError(f"config key '{name}' must be a whole number, got {text!r}")
        return int(value)
    return value


def config_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[Mapping[str, Any]]:
    """The mappings of a config file and of the files it ``extends``, base first."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(
            f"config files extend each other in a cycle: {' -> '.join(map(str, (*chain, path)))}"
        )
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        user = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {err}") from err
    if not isinstance(user, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    user = dict(user)
    base = user.pop("extends", None)
    if base is None:
        return [user]
    if not isinstance(base, str):
        raise ConfigError(f"'extends' in {path} must be the path of another config file, got {base!r}")
    return [*config_layers(path.parent / base, (*chain, path)), user]
