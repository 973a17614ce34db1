"""A full disk or a read-only output folder ends a stage with one line naming the file and the cause (no
traceback), and a report stage that fails keeps its last good markdown and figures."""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

import refexp.artifacts
from refexp.artifacts import keep_last_good
from refexp.errors import describe_os_error
from tests.stages.test_attention_regression import tiny_config, tiny_world  # noqa: F401  (fixture)


def _run_stage(monkeypatch, capsys, module, item: str) -> str:
    """stage_main of `module` with the tiny config; returns the one-line exit message."""
    import stages._cli

    monkeypatch.setattr(stages._cli, "load_config", lambda: tiny_config())
    monkeypatch.setattr(sys, "argv", [module.__name__, item])
    with pytest.raises(SystemExit) as ended:
        module.main()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return str(ended.value.code)


def _writes_under(folder: Path, real_open, make_target):
    """An `open` for refexp.artifacts that sends writes under `folder` to make_target(path)."""
    def patched(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).resolve().is_relative_to(folder.resolve()):
            return make_target(Path(file), mode)
        return real_open(file, mode, *args, **kwargs)
    return patched


def test_a_full_disk_names_the_checkpoint(tiny_world, monkeypatch, capsys):  # noqa: F811
    from stages import train_attention_regression

    models = tiny_world / "models"
    models.mkdir()
    # A real ENOSPC from the kernel: every checkpoint byte goes to /dev/full.
    monkeypatch.setattr(refexp.artifacts, "open",
                        _writes_under(models, open, lambda path, mode: open("/dev/full", mode)), raising=False)
    message = _run_stage(monkeypatch, capsys, train_attention_regression, "attention_full")
    assert message.startswith("error: ") and "checkpoint.pt" in message
    assert "no space left on device" in message and "MB free there" in message


def test_a_read_only_output_folder_is_one_line(tiny_world, monkeypatch, capsys):  # noqa: F811
    from stages import train_attention_regression

    models = tiny_world / "models"
    models.mkdir()

    def read_only(path: Path, mode: str):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(refexp.artifacts, "open", _writes_under(models, open, read_only), raising=False)
    message = _run_stage(monkeypatch, capsys, train_attention_regression, "attention_full")
    assert "checkpoint.pt" in message and "cannot write (Read-only file system)" in message


def test_a_params_typo_is_one_line(tiny_world, monkeypatch, capsys):  # noqa: F811
    import stages._cli
    from refexp.config import ConfigError, parse_config
    from stages import train_attention_regression

    raw = tiny_config().model_dump()
    raw["attention_regression"]["variants"]["attention_full"] = {"dropout": "lots"}

    def load():
        return parse_config(raw, "params.yaml")

    with pytest.raises(ConfigError):
        load()
    monkeypatch.setattr(stages._cli, "load_config", load)
    monkeypatch.setattr(sys, "argv", ["train_attention_regression", "attention_full"])
    with pytest.raises(SystemExit) as ended:
        train_attention_regression.main()
    assert "attention_regression.variants.attention_full" in str(ended.value.code)
    assert "dropout" in str(ended.value.code) and not (tiny_world / "models").exists()


@pytest.mark.parametrize("code, expected", [
    (errno.ENOSPC, "no space left on device"), (errno.EACCES, "cannot write (Permission denied)"),
    (errno.ENOENT, "not found"), (errno.EIO, "Input/output error")])
def test_os_errors_name_the_file(tmp_path, code, expected):
    message = describe_os_error(OSError(code, __import__("os").strerror(code), str(tmp_path / "x.pt")))
    assert message.startswith(str(tmp_path / "x.pt")) and expected in message


def _report(folder: Path, md: Path, figures: list[str], text: str, fail: bool = False) -> None:
    with keep_last_good(md, folder):
        folder.mkdir(parents=True)
        for name in figures:
            (folder / name).write_text(text)
        if fail:
            raise RuntimeError("rendering failed")
        md.write_text(text)


def test_a_failed_report_keeps_the_last_good_one(tmp_path):
    folder, md = tmp_path / "figures" / "scrc", tmp_path / "scrc.md"
    _report(folder, md, ["a.png", "b.png"], "good")
    with pytest.raises(RuntimeError):
        _report(folder, md, ["a.png"], "half", fail=True)
    assert md.read_text() == "good" and sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]
    assert (folder / "a.png").read_text() == "good"
    # A success replaces everything: no stale figure survives from the previous rendering.
    _report(folder, md, ["c.png"], "new")
    assert md.read_text() == "new" and [p.name for p in folder.iterdir()] == ["c.png"]
    assert not list(tmp_path.rglob("*.previous"))


def test_after_a_kill_the_aside_copy_wins_over_the_half_written_one(tmp_path):
    folder, md = tmp_path / "figures" / "scrc", tmp_path / "scrc.md"
    _report(folder, md, ["a.png"], "good")
    # What a kill mid-rendering leaves: the good version moved aside, a half-written one in place.
    import os
    for path in (md, folder):
        os.replace(path, path.with_name(f".{path.name}.previous"))
    folder.mkdir(parents=True)
    (folder / "half.png").write_text("half")
    with pytest.raises(RuntimeError):
        _report(folder, md, ["x.png"], "again", fail=True)
    assert md.read_text() == "good" and [p.name for p in folder.iterdir()] == ["a.png"]
