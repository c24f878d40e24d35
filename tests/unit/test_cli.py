"""The `chitu` command line (chitu_cli.main over chitu_diffusion.commands): one real subprocess run, the rest
in-process through `main(argv)`."""

import argparse
import importlib
import json
import subprocess
import sys
import types

import pytest

from chitu_cli import main as cli
from chitu_diffusion.video import read_mp4

TINY_REQUEST = ["--prompt", "A cat walking on grass", "--frames", "5", "--height", "32", "--width", "32"]
TINY_REQUEST += ["--steps", "2"]


def test_generate_subprocess_writes_video_and_metrics(tiny_model_dir, tmp_path):
    command = [sys.executable, "-m", "chitu_cli", "generate", "--model", str(tiny_model_dir)]
    command += [*TINY_REQUEST, "--flexcache", "none", "--cache-ratio", "0.5", "--warmup", "0", "--cooldown", "1"]
    command += ["--seed", "3", "--name", "cat", "--output", str(tmp_path), "infer.diffusion.dtype=float32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"video: {tmp_path / 'cat.mp4'}" in done.stdout
    assert "denoising step 2/2" in done.stderr  # plain log lines when not on a terminal
    assert read_mp4(tmp_path / "cat.mp4").num_frames == 5
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["params"]["flexcache_params"] == {"strategy": "none", "cache_ratio": 0.5, "warmup": 0, "cooldown": 1}
    assert metrics["engine_config"]["infer"]["diffusion"]["dtype"] == "float32"


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--frames", "8"], "--frames (num_frames): num_frames must be 4k+1"),
        (["--height", "40"], "--height (height): height must be a multiple of 16"),
        (["--steps", "0"], "--steps (num_inference_steps): Input should be greater than 0"),
        (["--guidance-scale", "-1"], "--guidance-scale (guidance_scale)"),
        (["--cache-ratio", "1.5"], "--cache-ratio (flexcache_params.cache_ratio): Input should be less than or equal"),
        (["--flexcache", "magic"], "--flexcache (flexcache_params.strategy): strategy must be one of"),
        (["--flexcache", "teacache", "--warmup", "1", "--cooldown", "1"], "[--steps, --warmup, --cooldown]"),
        (["--prompt", " "], "--prompt (prompt): prompt must be a non-empty text"),
        (["infer.diffusion.cp=2"], "unknown engine config key 'infer.diffusion.cp'"),
        (["infer.diffusion.cp_size=2"], "infer.diffusion.cp_size=2 needs context parallelism"),
        (["--flexcache", "ditango", "--warmup", "0"], "'ditango' needs ring attention over at least 2 ranks"),
        (["infer.diffusion.dtype=fp8"], "infer.diffusion.dtype: Input should be"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(tiny_model_dir, tmp_path, capsys, flags, expected):
    argv = ["generate", "--model", str(tiny_model_dir), "--output", str(tmp_path / "out"), *TINY_REQUEST, *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chitu generate: error: ") and expected in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_bad_name_exits_2(tiny_model_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(tiny_model_dir), "--output", str(tmp_path), "--name", "../up", *TINY_REQUEST]
    assert cli.main(argv) == 2
    assert "chitu generate: error: --name: name must be a plain file name stem" in capsys.readouterr().err


def test_missing_model_exits_2_naming_the_path(tmp_path, capsys):
    argv = ["generate", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"), *TINY_REQUEST]
    assert cli.main(argv) == 2
    assert f"--model: model folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_argparse_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--model", "m", "--output", "o", "--prompt", "p", "--steps", "many"])
    assert exit_info.value.code == 2 and "--steps" in capsys.readouterr().err


def test_make_tiny_model(tmp_path, capsys):
    assert cli.main(["make-tiny-model", str(tmp_path / "tiny"), "--seed", "1"]) == 0
    assert (tmp_path / "tiny" / "model_index.json").is_file()
    assert str(tmp_path / "tiny") in capsys.readouterr().out


def test_make_random_model_choices_match_the_builders(tmp_path):
    from chitu_diffusion.models.random_init import ARCHS, TEXT_ENCODERS

    random_model = cli.build_parser()._subparsers._group_actions[0].choices["make-random-model"]
    choices = {a.dest: a.choices for a in random_model._actions if a.choices}
    assert choices == {"arch": tuple(ARCHS), "text_encoder": TEXT_ENCODERS}
    assert cli.main(["make-random-model", str(tmp_path / "m"), "--arch", "tiny", "--seed", "2"]) == 0
    assert (tmp_path / "m" / "transformer" / "config.json").is_file()


ENGINE_COMMANDS = {"generate", "make-tiny-model", "make-random-model", "calibrate-teacache"}


def group_commands(module_name: str) -> set[str]:
    """The commands one group registers on a parser of its own."""
    commands = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module_name).register(commands)
    return set(commands.choices)


def test_a_missing_dependency_names_the_extra(monkeypatch, capsys):
    def needs_a_missing_package(args):
        import kubernetes_not_installed  # noqa: F401  (what an install without the extra meets)

    def register(commands):
        commands.add_parser("fetch-model").set_defaults(func=needs_a_missing_package)

    fake = types.SimpleNamespace(register=register, run_command=lambda args: args.func(args))
    monkeypatch.setitem(sys.modules, "fake_group", fake)
    monkeypatch.setattr(cli, "GROUPS", (*cli.GROUPS, cli.CommandGroup("fake_group", extra="models")))
    assert cli.main(["fetch-model"]) == cli.MISSING_DEPENDENCY
    expected = "chitu fetch-model: error: needs kubernetes_not_installed, which is not installed: "
    expected += "pip install 'chitu[models]'"
    assert expected in capsys.readouterr().err


def test_help_lists_every_command_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    listed = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert group_commands("chitu_diffusion.commands") == ENGINE_COMMANDS
    assert listed == set().union(*(group_commands(group.module) for group in cli.GROUPS))
    assert {"submit", "status"} <= listed and "dev-cluster" not in listed  # chitu-dev-cluster is its own script
    out = capsys.readouterr().out
    assert all(name in out for name in listed)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("chitu 0.")


def test_engine_command_help_is_the_commands_parser(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: chitu generate") and "none, ditango, pab, teacache" in out


def test_help_and_a_validation_error_import_no_torch():
    """`chitu --help` and a bad request never pay for torch (or a Kubernetes client)."""
    code = (
        "import sys\n"
        "from chitu_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert main(['generate', '--model', 'm', '--output', 'o', '--prompt', 'p', '--frames', '8']) == 2\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'kubernetes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
    assert "--frames (num_frames): num_frames must be 4k+1" in done.stderr
