"""Progress on the console: a bar on a terminal, one line per phase elsewhere (a log file gets no redraws)."""
import pytest

from blipexp.runtime import progress


def run_phase(steps: int = 3, **kwargs) -> None:
    with progress.bar("encoding", steps, "img", **kwargs) as bar:
        for _ in range(steps):
            bar.update()
        bar.set_postfix(loss="1.234")


def test_outside_a_terminal_a_phase_prints_one_line_when_it_ends(capsys):
    run_phase()
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("encoding: 3/3 img in ") and out.out.endswith(" s (loss 1.234)\n")
    assert len(out.out.splitlines()) == 1 and out.err == ""


def test_a_phase_that_fails_or_is_not_shown_prints_nothing(capsys):
    run_phase(show=False)
    with pytest.raises(RuntimeError), progress.bar("encoding", 3, "img"):
        raise RuntimeError("stopped")
    assert capsys.readouterr() == ("", "")


def test_on_a_terminal_the_bar_is_drawn(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    run_phase()
    out = capsys.readouterr()
    assert out.out == "" and "encoding" in out.err and "\r" in out.err
