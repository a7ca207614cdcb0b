"""The command-line grammar: `medtune evaluate EVALUATION|CONFIG` decided by name, and one set of dtype names
(bf16|fp16|fp32|auto) with the old spellings still accepted, noted as deprecated."""

from __future__ import annotations

import pytest
import yaml

from medtune import cli
from medtune.config import ConfigError, load_config


@pytest.fixture
def stage_calls(monkeypatch):
    import medtune.evaluate

    calls = []
    monkeypatch.setattr(medtune.evaluate, "evaluate_run", lambda cfg, force: calls.append((cfg, force)))
    return calls


def _config(path):
    path.write_text(yaml.safe_dump({"output_dir": str(path.parent / "run")}))
    return path


@pytest.mark.parametrize("name", ["run.conf", "compare.yaml", "settings"])
def test_evaluate_takes_any_file_not_named_like_an_evaluation_as_a_config(name, tmp_path, stage_calls):
    config = _config(tmp_path / name)
    assert cli.main(["evaluate", str(config), "--force"]) == 0
    assert [(c.output_dir, force) for c, force in stage_calls] == [(str(tmp_path / "run"), True)]


def test_evaluate_word_that_names_an_evaluation_is_that_evaluation(tmp_path, monkeypatch, stage_calls, capsys):
    monkeypatch.chdir(tmp_path)
    _config(tmp_path / "compare")  # a config file named like an evaluation is still the evaluation ...
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "compare"])
    assert "--output" in capsys.readouterr().err and not stage_calls  # compare's own parser: --output missing
    assert cli.main(["evaluate", "./compare"]) == 0 and len(stage_calls) == 1  # ... and ./compare the config


def test_evaluate_names_a_missing_config_and_the_evaluations(tmp_path, capsys, stage_calls):
    assert cli.main(["evaluate", str(tmp_path / "nothing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no config file" in err and "nothing.yaml" in err and "perplexity, compare" in err and not stage_calls


@pytest.mark.parametrize("old, new", [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32")])
def test_old_dtype_spellings_work_with_a_deprecation_note(old, new, tmp_path, capsys):
    from medtune.evaluate.cli import build_parser

    args = build_parser()[0].parse_args(["perplexity", "--model", "m", "--data", "d", "--output", "o.json",
                                         "--dtype", old])
    assert args.dtype == new
    assert f"--dtype '{old}' is deprecated" in capsys.readouterr().err
    for command in (["merge", "run", "--output", "o"], ["chat", "m"], ["serve", "m"]):
        assert cli.build_parser().parse_args([*command, "--dtype", old]).dtype == new
        assert f"write '{new}'" in capsys.readouterr().err

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "r", "model": {"torch_dtype": old}}))
    assert load_config(config).model.torch_dtype == new
    err = capsys.readouterr().err
    assert str(config) in err and "model.torch_dtype" in err and "deprecated" in err


def test_new_dtype_names_are_quiet_and_others_rejected(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    for name in ("auto", "bf16", "fp16", "fp32"):
        config.write_text(yaml.safe_dump({"output_dir": "r", "model": {"torch_dtype": name}}))
        assert load_config(config).model.torch_dtype == name
        assert cli.build_parser().parse_args(["chat", "m", "--dtype", name]).dtype == name
    assert capsys.readouterr().err == ""
    config.write_text(yaml.safe_dump({"output_dir": "r", "model": {"torch_dtype": "half"}}))
    with pytest.raises(ConfigError, match="model.torch_dtype"):
        load_config(config)
    # merge takes auto too (the base model's dtype), as the README promises for every --dtype
    assert cli.build_parser().parse_args(["merge", "run", "--output", "o", "--dtype", "auto"]).dtype == "auto"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["merge", "run", "--output", "o", "--dtype", "half"])
