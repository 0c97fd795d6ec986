import sys
import textwrap

import pytest
from conftest import EXPERIMENTS

from blipexp.experiment import catalog
from blipexp.experiment.spec import ExperimentSpec


@pytest.mark.parametrize("name", catalog.names(EXPERIMENTS))
def test_every_experiment_loads_and_validates(name):
    spec = catalog.load(name, EXPERIMENTS)
    assert isinstance(spec, ExperimentSpec) and spec.name == name
    docstring = type(spec)._docstring or sys.modules[type(spec).__module__].__doc__ or ""
    assert docstring.lower().startswith("hypothesis:") and spec.hypothesis, f"{name}.py must state its hypothesis first"
    tiny = spec.tiny()  # the tiny profile of every experiment validates too
    assert tiny.is_tiny and tiny.search_space().keys() == spec.search_space().keys()


def test_the_shipped_experiments_are_there():
    assert {"football_baseline", "football_lr_sweep"} <= set(catalog.names(EXPERIMENTS))
    sweep = catalog.load("football_lr_sweep", EXPERIMENTS)
    assert set(sweep.search_space()) == {"learning_rate", "epochs"}
    assert sweep.search_space()["learning_rate"].log


def test_unknown_experiment_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean football_baseline"):
        catalog.load("football_baselin", EXPERIMENTS)


def test_experiment_builds_on_another_with_a_relative_import(tmp_path):
    (tmp_path / "parent_exp.py").write_text(textwrap.dedent('''
        """Hypothesis: parent."""
        from blipexp import ExperimentSpec
        class Parent(ExperimentSpec):
            epochs = 4
    '''))
    (tmp_path / "child_exp.py").write_text(textwrap.dedent('''
        """Hypothesis: child."""
        from .parent_exp import Parent
        class Child(Parent):
            learning_rate = 1e-4
    '''))
    child = catalog.load("child_exp", tmp_path)
    assert (child.epochs, child.learning_rate, type(child).__name__) == (4, 1e-4, "Child")


def test_broken_experiment_files_give_a_clear_error(tmp_path):
    (tmp_path / "two.py").write_text("from blipexp import ExperimentSpec\n"
                                     "class A(ExperimentSpec): pass\nclass B(ExperimentSpec): pass\n")
    (tmp_path / "bad_value.py").write_text("from blipexp import ExperimentSpec\n"
                                           "class A(ExperimentSpec):\n    epochs = 0\n")
    with pytest.raises(ValueError, match="exactly one ExperimentSpec subclass"):
        catalog.load("two", tmp_path)
    with pytest.raises(ValueError, match="bad_value: epochs=0 must be >= 1"):
        catalog.load("bad_value", tmp_path)
