"""The installable command: `keras-darts <command>`, packaged flag files, one-line
refusals of what absl itself rejects, and a console free of TF's start-up notes."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_module
from keras_darts.cli import flagfiles, main as cli_main, quiet_start


def test_every_flag_file_of_the_checkout_is_packaged():
    in_checkout = sorted(name[:-4] for name in os.listdir(os.path.join(REPO, "flags"))
                         if name.endswith(".cfg"))
    assert flagfiles.packaged_names() == in_checkout
    assert "quickstart" in in_checkout


@pytest.mark.parametrize("value", ["quickstart", "quickstart.cfg", "flags/quickstart.cfg"])
def test_a_packaged_name_resolves_outside_a_checkout(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)  # No flags/ folder here.
    path = flagfiles.locate(value)
    assert os.path.isfile(path) and os.path.basename(path) == "quickstart.cfg"
    assert "--epochs=8" in open(path).read()


def test_an_existing_file_wins_and_an_unknown_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").write_text("--epochs=1\n")
    assert flagfiles.locate("quickstart") == "quickstart"
    with pytest.raises(flagfiles.UnknownFlagFile, match="packaged: .*train_quickstart"):
        flagfiles.locate("no_such_config")


def test_both_spellings_of_the_flag_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = flagfiles.resolve(["--flagfile", "quickstart", "--epochs=2",
                                  "--flagfile=train_quickstart"])
    assert resolved[1] == "--epochs=2" and len(resolved) == 3
    assert all(os.path.isfile(arg.split("=", 1)[1]) for arg in (resolved[0], resolved[2]))


@pytest.mark.parametrize("argv, code, stream, text", [
    ([], 2, "err", "no command given"),
    (["searhc"], 2, "err", "unknown command 'searhc'"),
    (["--help"], 0, "out", "search|select|train|export".replace("|", ",")),
])
def test_the_dispatcher_answers_without_a_command(capsys, argv, code, stream, text):
    assert cli_main.main(argv) == code
    captured = capsys.readouterr()
    assert text in (captured.err if stream == "err" else captured.out)


def test_release_drops_only_tf_start_up_notes(capsys, monkeypatch):
    monkeypatch.setattr(quiet_start, "_held", [
        "I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
        "E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: CUDA error\n"
        "UserWarning: something the user must see\n"])
    quiet_start.release()
    assert capsys.readouterr().err == "UserWarning: something the user must see\n"
    quiet_start.release()  # Once only.
    assert capsys.readouterr().err == ""


def _one_error_line(result, message):
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "usage" not in result.stderr.lower()


@pytest.mark.slow
def test_the_installed_command_runs_a_packaged_flag_file_anywhere(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "keras-darts")
    assert os.path.isfile(script), "install with pip install -e . (README)"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)

    def run(*args):
        return subprocess.run([script, "search", "--flagfile=quickstart", "--layers=2",
                               f"--output_dir={tmp_path / 'run'}", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    quiet = run()
    _one_error_line(quiet, "--layers must be >= 3, got 2")  # The packaged file was read.
    assert not any(quiet_start.is_note(line) for line in quiet.stderr.splitlines())
    assert not (tmp_path / "run").exists()
    loud = run("--tf_startup_logs")
    _one_error_line(loud, "--layers must be >= 3, got 2")
    assert any(quiet_start.is_note(line) for line in loud.stderr.splitlines()), loud.stderr


@pytest.mark.parametrize("args, message", [
    (["--epochs=abc"], "flag --epochs=abc"),  # Rejected by absl's own parser.
    (["--no_such_flag=1"], "no_such_flag"),
    (["--flagfile=no_such_config"], "'no_such_config' is neither a file"),
    (["left_over"], "unexpected arguments ['left_over']"),
])
def test_what_absl_rejects_is_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_module("keras_darts.search", "--flagfile=quickstart", f"--output_dir={out}",
                        *args, timeout=300)
    _one_error_line(result, message)
    assert not out.exists()
