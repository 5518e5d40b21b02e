"""Configuration files for every `bbbanomaly` command: ``--config FILE`` and ``--dump-defaults``.

Generic over argparse: the keys of a command are the ``dest`` names of its arguments (``--aif-mask``
-> ``aif_mask``; ``aif-mask`` is accepted too), their types, choices and ``nargs`` come from the
actions, so a new flag gets a key without any code here.

- :func:`install` adds ``--config`` and ``--dump-defaults`` to every leaf command of a parser and
  remembers, in the parsed namespace, the command path and its keys (``_config_command``,
  ``_config_keys``) so that :func:`effective_configuration` can record a run.
- :func:`preprocess` runs before the final parse: it finds the command in ``argv``, prints the
  defaults, or loads, validates and applies a file with ``parser.set_defaults(**validated)``, so
  the command line still overrides the file. A positional argument or a required option that the
  file supplies becomes optional on the command line.
- :func:`effective_configuration` is what a report records (paths absolute, the inputs'
  sha256) and what ``bbbanomaly rerun`` applies again through :func:`apply_values`.

Formats: JSON always; TOML (``.toml``) on Python >= 3.11 (tomllib); YAML (``.yaml``/``.yml``) only
when PyYAML happens to be importable -- it is not a dependency. ``null`` (or a missing key) means
"the command's default".
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import sys
from pathlib import Path

from .core.errors import InputError

CONFIG_HELP = ("read options from a JSON, TOML (Python >= 3.11) or YAML (only if PyYAML is installed; not a "
               "dependency) file; keys are the option names with '_' (e.g. aif_mask); flags given on the "
               "command line override the file")
DUMP_HELP = "print every key of this command with its default (json, toml or yaml) and exit"
#: dests that are bookkeeping, never configuration
_INTERNAL = {"help", "version", "config", "dump_defaults"}
#: dests that name outputs: made absolute in a record, never fingerprinted as inputs
OUTPUT_KEYS = {"out", "json"}


# --- installing the options -----------------------------------------------------------------------
def install(parser: argparse.ArgumentParser) -> None:
    """Add --config/--dump-defaults to every leaf command of `parser` (idempotent)."""
    for path, leaf in _leaves(parser, ()):
        if any(a.dest == "config" for a in leaf._actions):
            continue
        group = leaf.add_argument_group("configuration")
        group.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
        group.add_argument("--dump-defaults", nargs="?", const="json", choices=["json", "toml", "yaml"],
                           metavar="FORMAT", help=DUMP_HELP)
        leaf.set_defaults(_config_command=list(path), _config_keys=[a.dest for a in config_actions(leaf)])


def _leaves(parser, path):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        if path:
            yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, path + (name,))


def config_actions(leaf: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions of a leaf command that a configuration may set (one per dest)."""
    seen, out = set(), []
    for action in leaf._actions:
        if (action.dest in _INTERNAL or action.dest in seen or action.dest == argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))):
            continue
        seen.add(action.dest)
        out.append(action)
    return out


def find_command(parser: argparse.ArgumentParser, argv: list[str]):
    """(command path, leaf parser) named by the leading words of `argv`, or (None, None)."""
    path, current = [], parser
    for token in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        if token.startswith("-"):
            continue
        if token not in subs[0].choices:
            return None, None
        path.append(token)
        current = subs[0].choices[token]
    if not path or any(isinstance(a, argparse._SubParsersAction) for a in current._actions):
        return None, None
    return path, current


def leaf_parser(parser: argparse.ArgumentParser, command: list[str]) -> argparse.ArgumentParser:
    path, leaf = find_command(parser, list(command))
    if leaf is None or path != list(command):
        raise InputError(f"'{' '.join(command)}' is not a bbbanomaly command")
    return leaf


# --- before the final parse -----------------------------------------------------------------------
def preprocess(parser: argparse.ArgumentParser, argv: list[str]) -> list[str] | None:
    """Handle --dump-defaults (print, return None) and --config (apply, return argv unchanged)."""
    path, leaf = find_command(parser, argv)
    if leaf is None:
        return argv
    rest = argv[len(path):]
    dump = _option_value(rest, "--dump-defaults", const="json")
    if dump is not None:
        if dump not in ("json", "toml", "yaml"):
            raise InputError(f"--dump-defaults takes json, toml or yaml, not '{dump}'")
        sys.stdout.write(dump_defaults(leaf, dump))
        return None
    config_file = _option_value(rest, "--config")
    if config_file:
        apply_values(leaf, load_file(config_file), source=f"config {config_file}")
    return argv


def _option_value(args: list[str], flag: str, const: str | None = None) -> str | None:
    for i, token in enumerate(args):
        if token == "--":
            break
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
        if token == flag:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if const is not None:
                return nxt if nxt in ("json", "toml", "yaml") else const
            if nxt is None or nxt.startswith("-"):
                raise InputError(f"{flag} needs a FILE")
            return nxt
    return None


def load_file(path) -> dict:
    """A configuration file as a dict (JSON, TOML, YAML by extension); one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"config '{path}' is a folder, not a file; give the JSON, TOML or YAML file in it")
    if not path.is_file():
        raise InputError(f"config file '{path}' not found; check the path")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # e.g. the series (.nii.gz) given as --config by mistake
        raise InputError(f"config file '{path}' is not a text file; --config takes a JSON, TOML or YAML text "
                         "file (--dump-defaults prints one to start from)") from None
    except OSError as exc:
        raise InputError(f"cannot read config file '{path}' ({exc.strerror or exc}); check its permissions") from None
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:
                raise InputError("TOML config files need Python >= 3.11 (tomllib); use JSON") from None
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise InputError("YAML config files need PyYAML (`pip install pyyaml`; not a dependency); "
                                 "use JSON or TOML") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except InputError:
        raise
    except Exception as exc:  # the parsers' own errors differ; all mean "this file does not parse"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"config file '{path}' does not parse as {suffix.lstrip('.') or 'JSON'} ({msg})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file '{path}' must hold a mapping of keys to values at the top level")
    return data


def validate(leaf: argparse.ArgumentParser, values: dict, source: str = "config") -> dict:
    """Check every key against the command's actions; return {dest: typed value} (None values dropped)."""
    actions = {a.dest: a for a in config_actions(leaf)}
    out = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"{source}: unknown key '{raw_key}' for `bbbanomaly {leaf.prog.split(' ', 1)[-1]}`; "
                             f"{hint}--dump-defaults lists the keys")
        if value is None:
            continue
        out[key] = _check(actions[key], value, f"{source}: key '{key}'")
    return out


def apply_values(leaf: argparse.ArgumentParser, values: dict, source: str = "config") -> dict:
    """Validate `values` and make them the command's defaults (the command line still overrides)."""
    validated = validate(leaf, values, source)
    for action in config_actions(leaf):
        if action.dest not in validated:
            continue
        if not action.option_strings:  # a positional given by the file: optional on the command line
            action.nargs = "*" if action.nargs in ("+", "*") or isinstance(action.nargs, int) else "?"
        action.required = False
    leaf.set_defaults(**validated)
    return validated


def _kind(action) -> tuple[str, object]:
    """('bool'|'count'|'scalar'|'list', element type)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return "bool", bool
    if isinstance(action, argparse._CountAction):
        return "count", int
    if isinstance(action, argparse._StoreConstAction):
        return "const", None
    if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
        return "list", action.type
    if action.nargs in ("+", "*", argparse.REMAINDER) or isinstance(action.nargs, int):
        return "list", action.type
    return "scalar", action.type


def _type_name(kind, elem) -> str:
    name = {None: "string", str: "string", int: "integer", float: "number"}.get(elem, getattr(elem, "__name__", "value"))
    return {"bool": "true or false", "count": "integer", "list": f"list of {name}s"}.get(kind, name)


def _check(action, value, where: str):
    kind, elem = _kind(action)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, not {value!r}")
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where} must be a non-negative integer, not {value!r}")
        return value
    if kind == "const":
        allowed = [action.const, action.default]
        if value not in allowed:
            raise InputError(f"{where} must be one of {allowed}, not {value!r}")
        return value
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            value = [value] if action.nargs in ("*", "+") and not isinstance(value, dict) else value
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a {_type_name(kind, elem)}, not {value!r}")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise InputError(f"{where} must be a list of {action.nargs} {_type_name('scalar', elem)}s, not {value!r}")
        if action.nargs == "+" and not value:
            raise InputError(f"{where} must be a non-empty list")
        return [_element(action, v, elem, where) for v in value]
    return _element(action, value, elem, where)


def _element(action, value, elem, where: str):
    if isinstance(value, (dict, list, tuple)) or isinstance(value, bool) and elem is not bool:
        raise InputError(f"{where} must be a {_type_name('scalar', elem)}, not {value!r}")
    if elem in (None, str):
        if not isinstance(value, (str, int, float)):
            raise InputError(f"{where} must be a string, not {value!r}")
        converted = value if isinstance(value, str) else repr(value)
    elif elem is int:
        if not isinstance(value, int):
            raise InputError(f"{where} must be an integer, not {value!r}")
        converted = value
    elif elem is float:
        if not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, not {value!r}")
        converted = float(value)
    else:  # a custom argparse type: give it the text, as the command line would
        try:
            converted = elem(value if isinstance(value, str) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise InputError(f"{where}: {value!r} is not accepted ({exc})") from exc
    if action.choices is not None and converted not in action.choices:
        raise InputError(f"{where} = {value!r} is not one of: {', '.join(map(str, action.choices))}")
    return converted


# --- --dump-defaults ------------------------------------------------------------------------------
def defaults_of(leaf: argparse.ArgumentParser) -> dict:
    """Every key of a command with its default (None where there is none)."""
    out = {}
    for action in config_actions(leaf):
        default = action.default
        if isinstance(action, argparse._StoreTrueAction) and default is None:
            default = False
        out[action.dest] = list(default) if isinstance(default, tuple) else default
    return out


def dump_defaults(leaf: argparse.ArgumentParser, fmt: str = "json") -> str:
    values = defaults_of(leaf)
    if fmt == "json":
        return json.dumps(values, indent=2) + "\n"
    if fmt == "yaml":
        try:
            import yaml
        except ModuleNotFoundError:
            raise InputError("--dump-defaults yaml needs PyYAML (`pip install pyyaml`; not a dependency); "
                             "use json or toml") from None
        return yaml.safe_dump(values, sort_keys=False)
    lines = [f"# bbbanomaly {leaf.prog.split(' ', 1)[-1]}: keys without a default are commented out"]
    for action in config_actions(leaf):
        kind, elem = _kind(action)
        doc = (action.help or "").replace("\n", " ").replace("%(default)s", str(action.default))
        choices = f" [{', '.join(map(str, action.choices))}]" if action.choices else ""
        lines.append(f"# {_type_name(kind, elem)}{choices}: {doc}".rstrip())
        value = values[action.dest]
        lines.append(f"{action.dest} = {_toml_value(value)}" if value is not None else f"# {action.dest} =")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


# --- what a report records ------------------------------------------------------------------------
def effective_configuration(args: argparse.Namespace) -> dict | None:
    """The run's exact configuration: {"command": [...], "options": {key: value}, "inputs": {path: {...}}}.

    Paths that exist (and the output folder) are absolute; every input file (and its sidecar,
    bval/bvec or NRRD data file; every file of an input folder) is recorded with size and sha256, so
    that `bbbanomaly rerun` refuses an input that changed. None when the namespace was not made by
    the `bbbanomaly` parser.
    """
    command, keys = getattr(args, "_config_command", None), getattr(args, "_config_keys", None)
    if not command or keys is None:
        return None
    options, inputs = {}, {}
    for key in keys:
        value = getattr(args, key, None)
        options[key] = _absolute(key, value)
        if key in OUTPUT_KEYS:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and os.path.exists(item):
                for f in input_files(Path(item)):
                    inputs[str(f)] = fingerprint(f)
    return {"command": list(command), "options": options, "inputs": inputs}


def _absolute(key: str, value):
    if isinstance(value, (list, tuple)):
        return [_absolute(key, v) for v in value]
    if isinstance(value, str) and (os.path.exists(value) or key in OUTPUT_KEYS and value != "-"):
        return str(Path(value).resolve())
    return value


def input_files(path: Path) -> list[Path]:
    """The files a path stands for: itself and its same-name companions, or every file of a folder."""
    path = path.resolve()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    name = path.name
    for suffix in (".nii.gz", ".seq.nrrd", ".nii", ".nrrd", ".nhdr"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            companions = [p for p in path.parent.glob(stem + ".*")
                          if p != path and p.is_file() and p.name[len(stem) + 1:] in _COMPANIONS]
            return [path, *sorted(companions)]
    return [path]


_COMPANIONS = {"json", "bval", "bvec", "raw", "raw.gz", "img", "img.gz"}


def fingerprint(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}
