"""--config FILE and --dump-defaults on every command (BBBAnomalyLib.config)."""

import json
import sys

import pytest

from BBBAnomalyLib import config
from BBBAnomalyLib.cli import build_parser, main
from BBBAnomalyLib.core.errors import InputError


def leaves():
    return list(config._leaves(build_parser(), ()))


def test_every_command_has_config_and_dump_defaults():
    names = {" ".join(path) for path, _ in leaves()}
    for expected in ("dsc", "dce", "dmri", "t1flair", "roi-stats", "train dce-rls", "train phae", "bids", "rerun"):
        assert expected in names
    for path, leaf in leaves():
        dests = {a.dest for a in leaf._actions}
        assert {"config", "dump_defaults"} <= dests, path


@pytest.mark.parametrize("path", [p for p, _ in leaves()], ids=lambda p: "-".join(p))
def test_dumped_defaults_name_every_flag_and_load_back(path, capsys, tmp_path):
    assert main([*path, "--dump-defaults"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    leaf = config.leaf_parser(build_parser(), list(path))
    flags = {a.dest for a in leaf._actions} - {"help", "config", "dump_defaults"}
    assert set(dumped) == flags
    for action in leaf._actions:
        if action.dest in dumped and action.default is not None and not isinstance(action.default, bool):
            assert dumped[action.dest] == action.default
    file = tmp_path / "defaults.json"
    file.write_text(json.dumps(dumped))
    config.validate(leaf, config.load_file(file))  # the dump is a valid config of its own command


def test_toml_dump_parses_and_matches_the_json_defaults(capsys):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the project's CI runs 3.11)
    main(["dce", "--dump-defaults"])
    as_json = json.loads(capsys.readouterr().out)
    main(["dce", "--dump-defaults", "toml"])
    as_toml = tomllib.loads(capsys.readouterr().out)
    assert as_toml == {k: v for k, v in as_json.items() if v is not None}


def test_config_values_apply_and_the_command_line_overrides_them(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"series": "dsc.nii.gz", "method": "csvd", "kh": 1, "te": [0.02, 0.04],
                                "aif-search": True, "baseline_frames": [2, 8], "second_echo": "e2.nii.gz"}))
    parser = build_parser()
    argv = config.preprocess(parser, ["dsc", "--config", str(file), "--kh", "0.5"])
    args = parser.parse_args(argv)
    assert args.series == "dsc.nii.gz"  # a positional may come from the file
    assert args.method == "csvd" and args.te == [0.02, 0.04] and args.aif_search is True
    assert args.baseline_frames == [2, 8]
    assert args.kh == 0.5  # the flag wins over the file
    assert args.density == 1.04  # untouched keys keep the command's default
    parser = build_parser()
    args = parser.parse_args(config.preprocess(parser, ["dsc", "other.nii.gz", "--config", str(file)]))
    assert args.series == "other.nii.gz" and args.kh == 1.0


def test_a_required_option_can_come_from_the_file(tmp_path):
    file = tmp_path / "t1flair.toml"
    file.write_text('t1 = "t1.nii.gz"\nflair = "flair.nii.gz"\nout = "res"\nsteps = 8\n')
    parser = build_parser()
    args = parser.parse_args(config.preprocess(parser, ["t1flair", "--config", str(file)]))
    assert (args.t1, args.flair, args.out, args.steps) == ("t1.nii.gz", "flair.nii.gz", "res", 8)


@pytest.mark.parametrize("content, words", [
    ({"methd": "csvd"}, ["unknown key 'methd'", "did you mean 'method'"]),
    ({"kh": "high"}, ["key 'kh'", "must be a number"]),
    ({"method": "svd"}, ["key 'method'", "not one of: ssvd, csvd, osvd, tikhonov"]),
    ({"adapt": "yes"}, ["key 'adapt'", "true or false"]),
    ({"skip_frames": 1.5}, ["key 'skip_frames'", "must be an integer"]),
    ({"baseline_frames": [1, 2, 3]}, ["key 'baseline_frames'", "list of 2"]),
    ({"te": {"a": 1}}, ["key 'te'"]),
])
def test_bad_config_is_refused_in_one_line_naming_the_key(tmp_path, capsys, content, words):
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(content))
    assert main(["dsc", "x.nii.gz", "--config", str(file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bbbanomaly dsc: error:")
    for word in words:
        assert word in err


def test_unparsable_missing_and_non_mapping_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    for path, word in ((bad, "does not parse"), (tmp_path / "none.json", "not found"), (listing, "mapping")):
        assert main(["dce", "--config", str(path), "s.nii.gz"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err


def test_yaml_without_pyyaml_is_refused_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML absent (it is not a dependency)
    file = tmp_path / "run.yaml"
    file.write_text("method: csvd\n")
    assert main(["dsc", "x.nii.gz", "--config", str(file)]) == 2
    assert "PyYAML" in capsys.readouterr().err
    with pytest.raises(InputError, match="PyYAML"):
        config.dump_defaults(config.leaf_parser(build_parser(), ["dsc"]), "yaml")


def test_help_says_yaml_is_optional(capsys):
    with pytest.raises(SystemExit):
        main(["dmri", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in out and "PyYAML" in out and "not a dependency" in out
