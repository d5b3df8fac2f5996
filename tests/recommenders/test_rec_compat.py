"""The RecBole compat shims: each is needed on this stack, each works, and removing one breaks RecBole again."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from reckit import rec_split_dir_fixture  # noqa: F401  (fixture)
from scipy.sparse import dok_matrix

from recsim_personas.errors import ConfigError, PolicyError
from recsim_personas.recommenders import recbole_compat
from recsim_personas.recommenders.recbole_compat import CompatReport, apply, import_recbole
from recsim_personas.recommenders.recbole_config import RecBoleConfig
from recsim_personas.recommenders.recbole_data import build, make_model


def _config(api, tmp_path: Path, model: str = "Pop"):
    return api.Config(model=model, dataset="recsim", config_dict={"data_path": str(tmp_path), "use_gpu": False})


def test_every_shim_is_needed_on_this_stack_and_apply_is_idempotent():
    report = apply()
    assert isinstance(report, CompatReport)
    # numpy 2 lacks the aliases, scipy >= 1.13 lacks dok_matrix._update, torch >= 2.6 loads weights only:
    assert report.numpy_aliases == ("float_", "complex_", "unicode_")
    assert report.scipy_dok_update is True
    assert report.torch_checkpoints is True
    assert apply() is report
    import recbole.trainer.trainer as trainer

    proxy = trainer.torch
    assert isinstance(proxy, recbole_compat._RecBoleTorch) and proxy._torch is torch  # not wrapped twice
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    # nothing changed torch globally
    assert torch.load.__module__ == "torch.serialization"


def test_without_the_numpy_aliases_recbole_cannot_even_build_a_config(tmp_path, monkeypatch):
    api = import_recbole()
    assert _config(api, tmp_path)["model"] == "Pop"
    monkeypatch.delattr(np, "float_")
    with pytest.raises(AttributeError, match="float_"):
        _config(api, tmp_path)


def test_the_dok_shim_builds_lightgcn_s_normalised_adjacency(rec_split_dir, tmp_path, monkeypatch):
    from recsim_personas.data.protocol import Split

    api = import_recbole()
    split = Split.load(rec_split_dir)
    config = RecBoleConfig(model="LightGCN", epochs=1, embedding_size=8)
    built = build(api, split, config, str(tmp_path), progress=False)
    model = make_model(api, built, config)
    # the reference: D^-1/2 A D^-1/2 of the bipartite user-item graph, computed densely
    inter = built.train_data.dataset.inter_matrix(form="coo")
    n_u, n_i = inter.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[inter.row, n_u + inter.col] = 1.0
    a[n_u + inter.col, inter.row] = 1.0
    d = a.sum(axis=1) + 1e-7
    ref = a / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    np.testing.assert_allclose(model.norm_adj_matrix.to_dense().numpy(), ref, rtol=1e-5, atol=1e-7)

    monkeypatch.delattr(dok_matrix, "_update")
    with pytest.raises(PolicyError, match="recbole:LightGCN failed while building the model") as info:
        make_model(api, built, config)
    assert isinstance(info.value.__cause__, AttributeError) and "_update" in str(info.value.__cause__)


def test_recbole_reloads_its_own_checkpoint_only_through_the_shim(rec_split_dir, tmp_path, monkeypatch):
    import recbole.trainer.trainer as trainer_module

    from recsim_personas.data.protocol import Split

    api = import_recbole()
    split = Split.load(rec_split_dir)
    config = RecBoleConfig(model="BPR", epochs=1, embedding_size=8)
    built = build(api, split, config, str(tmp_path), progress=False)
    model = make_model(api, built, config)
    trainer = api.get_trainer(built.config["MODEL_TYPE"], "BPR")(built.config, model)
    trainer.fit(built.train_data, valid_data=None, saved=True, show_progress=False)
    checkpoint = Path(trainer.saved_model_file)
    assert checkpoint.is_file() and checkpoint.parent == tmp_path / "checkpoints"
    result = trainer.evaluate(built.test_data, load_best_model=True, show_progress=False)
    assert set(result) == {"recall@10", "ndcg@10", "mrr@10"}

    # a pickle RecBole did not write in this process is loaded with torch's safe default and refused
    foreign = tmp_path / "foreign.pth"
    torch.save({"config": built.config}, foreign)
    with pytest.raises(pickle.UnpicklingError):
        trainer_module.torch.load(foreign)
    with pytest.raises(pickle.UnpicklingError):
        trainer.evaluate(built.test_data, load_best_model=True, model_file=str(foreign), show_progress=False)

    # without the shim, RecBole cannot read back the checkpoint it just wrote
    monkeypatch.setattr(trainer_module, "torch", torch)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        trainer.evaluate(built.test_data, load_best_model=True, show_progress=False)


def test_the_trainer_writes_nothing_into_the_current_directory(rec_split_dir, tmp_path, monkeypatch):
    from recsim_personas.recommenders.recbole_train import train_recbole

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    train_recbole(rec_split_dir, RecBoleConfig(model="Pop", epochs=1), progress=False)
    assert list(cwd.iterdir()) == []  # no log_tensorboard/, saved/ or log/


def test_pandas_3_is_refused_and_the_bound_is_declared():
    recbole_compat._check_pandas("2.3.3")
    with pytest.raises(ConfigError, match=r"pandas<3.*found pandas '3\.0\.0'"):
        recbole_compat._check_pandas("3.0.0")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert any(dep.replace(" ", "").startswith("pandas>=2.1,<3") for dep in pyproject["project"]["dependencies"])


def test_recbole_config_ignores_the_process_command_line(tmp_path, monkeypatch):
    from recbole.config import Config

    api = import_recbole()
    argv = ["recsim-personas", "benchmark", "--epochs=999", "--learning_rate=0.5"]
    monkeypatch.setattr("sys.argv", argv)
    raw = Config(model="Pop", dataset="recsim", config_dict={"data_path": str(tmp_path), "use_gpu": False})
    assert raw["epochs"] == 999  # what RecBole itself does with the command line
    config = _config(api, tmp_path)
    assert config["epochs"] != 999 and config["learning_rate"] != 0.5
    import sys

    assert sys.argv == argv  # restored
