"""labkit.progress: a bar in a notebook, silence everywhere else."""

import subprocess
import sys

from labkit.progress import Progress, in_notebook


def test_outside_a_notebook_it_prints_nothing_anywhere(capfd):
    assert not in_notebook()
    with Progress(total=5, label="quiet") as bar:
        for _ in range(5):
            bar.advance()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert bar.done == 5


def test_a_plain_script_stays_silent():
    code = ("from labkit.progress import Progress\n"
            "with Progress(3) as bar:\n    bar.advance(); bar.advance(); bar.advance()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert (done.stdout, done.stderr) == ("", "")


def test_the_bar_counts_and_clamps_and_renders_its_state():
    bar = Progress(total=4, label="sending <events>", show=False)
    bar.advance(3)
    bar.advance(5)
    assert bar.done == 4
    text = bar.html()
    assert "4/4" in text and "100%" in text and "sending &lt;events&gt;" in text
    bar.update(-2)
    assert bar.done == 0


def test_in_a_kernel_it_draws_one_display_and_updates_it(monkeypatch):
    shown = []
    import IPython.display as display

    monkeypatch.setattr(display, "display",
                        lambda obj, display_id: shown.append(("new", display_id)) or object())
    monkeypatch.setattr(display, "update_display",
                        lambda obj, display_id: shown.append(("update", display_id)))
    with Progress(total=3, show=True, every=0) as bar:
        bar.advance()
        bar.advance()
    kinds = [kind for kind, _ in shown]
    assert kinds[0] == "new" and set(kinds[1:]) == {"update"}
    assert len({display_id for _, display_id in shown}) == 1
