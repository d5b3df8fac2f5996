from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_recsim_personas_is_light():
    # Gymnasium (and so numpy) is imported to register the environment ids; nothing heavier.
    mods = _modules_after("import recsim_personas")
    assert "torch" not in mods and "transformers" not in mods
    assert "pandas" not in mods and "mesa" not in mods
    assert "recsim_personas.envs.movielens_env" not in mods  # string entry points: loaded on make only


def test_import_registers_the_environments():
    mods = _modules_after(
        "import recsim_personas, gymnasium; assert 'recsim_personas/MovieLens-v0' in gymnasium.registry"
    )
    assert "gymnasium" in mods


def test_data_and_agents_do_not_import_torch():
    mods = _modules_after("import recsim_personas.data, recsim_personas.agents")
    assert "torch" not in mods and "transformers" not in mods


def test_version_and_errors():
    import recsim_personas
    from recsim_personas.errors import ConfigError, DataFormatError, RecsimPersonasError, suggest

    assert recsim_personas.__version__
    assert issubclass(DataFormatError, RecsimPersonasError) and issubclass(ConfigError, ValueError)
    assert "'bias'" in suggest("bais", ["bias", "mf"])
    assert suggest("zzz", ["bias"]) == ""
