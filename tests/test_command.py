"""The shared command shape (qwen_tts_ext/command.py): parsing, errors, stdout discipline."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from qwen_tts_ext.command import Command, Option, emit
from qwen_tts_ext.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-5
    mode: Literal["a", "b"] = "a"


@dataclass
class Cfg:
    path: str = ""
    seed: int = 0
    dry: bool = False
    hashing: bool = True
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    text: str = ""

    def validate(self) -> None:
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")


RAN: list[Cfg] = []


def _run(cfg: Cfg) -> int:
    RAN.append(cfg)
    print("a log line")  # print() goes to stderr inside a command
    emit(f"result {cfg.seed}")
    return 0


def make(text_key=None) -> Command:
    return Command(name="t", description="test command", config=Cfg, run=_run, text_key=text_key, options=[
        Option("path", ("--path", "-p"), "a path"),
        Option("seed", "--seed", "a seed"),
        Option("dry", "--dry", "dry run", switch=True),
        Option("hashing", "--no-hash", "skip hashing", switch=False),
        Option("inner.lr", "--lr", "learning rate"),
        Option("names", "--names", "names"),
    ])


def parse(argv, text_key=None):
    return make(text_key).parse(argv)


def test_flags_overrides_and_file_mix_in_any_order(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("seed: 3\ninner:\n  lr: 2e-5\n")
    cfg = parse(["inner.mode=b", "--path", "a#b: c", "--config", str(y), "--dry", "--no-hash", "names=x,y"])
    assert cfg == Cfg(path="a#b: c", seed=3, dry=True, hashing=False, names=["x", "y"], inner=Inner(2e-5, "b"))
    # flags and overrides win over the file; the same value twice is fine
    cfg = parse(["--config", str(y), "--seed", "5", "seed=5", "--lr=1e-3", "--path=-p"])
    assert cfg.seed == 5 and cfg.inner.lr == 1e-3 and cfg.path == "-p"
    # a flag's value is never read as an override, even when it looks like one
    assert parse(["--path", "seed=9"]).path == "seed=9" and parse(["--path", "seed=9"]).seed == 0
    # negative numbers are values, not flags
    assert parse(["--lr", "-1"]).inner.lr == -1.0


def test_every_problem_is_reported_at_once():
    with pytest.raises(UserError) as exc:
        parse(["sed=1", "inner.lr=abc", "inner.mod=b", "--seed", "-2"])
    problems = exc.value.problems
    assert any("'sed'" in p and "did you mean 'seed'" in p for p in problems)
    assert any("inner.lr" in p and "expected a number" in p for p in problems)
    assert any("'inner.mod'" in p and "did you mean 'mode'" in p for p in problems)
    assert any("seed must be >= 0" in p for p in problems)  # validate() runs on what did parse
    assert len(problems) == 4


@pytest.mark.parametrize("argv,needle", [
    (["--seed", "1", "seed=abc"], "disagree"),
    (["seed=1", "--seed", "2"], "disagree"),
    (["--seed", "1", "--seed", "2"], "disagree"),
    (["seed=1", "seed=2"], "disagree"),
    (["--sed", "1"], "did you mean --seed"),
    (["--inner-lr", "1"], "unknown option --inner-lr"),
    (["--dry=yes"], "takes no value"),
    (["--seed"], "needs a value"),
    (["stray"], "unexpected argument 'stray'"),
    (["--config"], "needs a YAML file"),
])
def test_mistakes_are_user_errors(argv, needle):
    with pytest.raises(UserError, match=needle):
        parse(argv)


def test_unknown_flag_that_is_a_key_suggests_the_override():
    with pytest.raises(UserError, match=r"set it as text=VALUE"):
        parse(["--text", "x"])


def test_free_words_become_the_text_key():
    assert parse(["hello", "--seed", "2", "world"], text_key="text").text == "hello world"
    assert parse(["--", "--not-a-flag", "a=b"], text_key="text").text == "--not-a-flag a=b"
    with pytest.raises(UserError, match="disagree"):
        parse(["hello", "text=bye"], text_key="text")


def test_main_exit_codes_and_streams(capsys):
    RAN.clear()
    cmd = make()
    assert cmd.main(["--seed", "4"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "result 4\n" and "a log line" in cap.err
    assert cmd.main(["sed=1", "bad=2"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("error: ") == 2 and "Traceback" not in cap.err
    assert cmd.main(["--help"]) == 0
    cap = capsys.readouterr()
    assert "--no-hash" in cap.out and "[hashing]" in cap.out and "--lr" in cap.out
    assert len(RAN) == 1  # --help and errors never reach run()
    assert sys.stdout is not sys.stderr  # restored after the command


def test_interrupt_and_os_errors_are_one_line(capsys):
    def interrupted(cfg):
        raise KeyboardInterrupt

    def denied(cfg):
        raise PermissionError(13, "Permission denied", "/root/x")

    def bug(cfg):
        raise ValueError("a bug keeps its traceback")

    assert Command("t", "", Cfg, interrupted).main([]) == 130
    assert Command("t", "", Cfg, denied).main([]) == 2
    err = capsys.readouterr().err
    assert "interrupted" in err and "error: permission denied: /root/x" in err
    with pytest.raises(ValueError):
        Command("t", "", Cfg, bug).main([])
