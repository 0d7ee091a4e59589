"""settings.py: every UHEAD_VIZ_* variable is read there, when asked, and documented from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from uhead_viz import settings
from uhead_viz.errors import InputError, JudgeConfigError
from uhead_viz.packs import DEFAULT_PACK
from uhead_viz.settings import SettingError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "uhead_viz").rglob("*.py")) + [ROOT / "app.py"]
DECLARED = [d.var for d in settings.describe()]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in DECLARED + ["OPENAI_BASE_URL", "OPENAI_API_KEY", "XDG_CACHE_HOME"]:
        monkeypatch.delenv(var, raising=False)


def test_the_docs_table_is_the_one_settings_describes():
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- settings table:[^\n]*-->\n(.*?)<!-- end of settings table -->", text, re.S)
    assert m, "docs/settings.md lost its table markers"
    assert m.group(1) == settings.markdown_table(), "regenerate it: python -m uhead_viz.settings"


def test_every_variable_the_code_names_is_declared_once():
    assert len(DECLARED) == len(set(DECLARED))
    named = set()
    for path in SOURCES:
        named |= set(re.findall(r"\bUHEAD_VIZ_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    assert named - set(DECLARED) == set()
    assert set(DECLARED) - named == set()


def test_no_module_but_settings_reads_a_uhead_viz_variable():
    offenders = []
    for path in SOURCES:
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Call, ast.Subscript)):
                continue
            src = ast.unparse(node.func if isinstance(node, ast.Call) else node.value)
            if src not in ("os.environ.get", "os.getenv", "os.environ", "environ.get", "getenv"):
                continue
            arg = node.args[0] if isinstance(node, ast.Call) and node.args else getattr(node, "slice", None)
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)) or arg.value.startswith("UHEAD_VIZ_"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_every_accessor_has_a_docstring_and_a_default():
    for d in settings.describe():
        assert d.doc and d.default, d
        assert getattr(settings, d.accessor).__doc__
    assert DEFAULT_PACK in next(d.default for d in settings.describe() if d.var == "UHEAD_VIZ_MODEL")


def test_values_are_read_when_asked(monkeypatch, tmp_path):
    assert settings.model() is None
    monkeypatch.setenv("UHEAD_VIZ_MODEL", "  some/model ")
    assert settings.model() == "some/model"
    monkeypatch.setenv("UHEAD_VIZ_MODEL", "   ")
    assert settings.model() is None  # blank is unset
    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(tmp_path))
    assert settings.checkpoints_dir() == tmp_path
    monkeypatch.setenv("UHEAD_VIZ_EXAMPLES", "~/ex")
    assert settings.examples_dir() == Path("~/ex").expanduser()
    assert settings.baseline() is None
    monkeypatch.setenv("UHEAD_VIZ_BASELINE", "maxprob")
    assert settings.baseline() == "maxprob"


def test_numbers_and_their_defaults(monkeypatch):
    assert (settings.max_rows(), settings.max_chain_tokens(), settings.max_upload_bytes()) == (1000, 12288, 20 << 20)
    monkeypatch.setenv("UHEAD_VIZ_MAX_ROWS", "7")
    monkeypatch.setenv("UHEAD_VIZ_MAX_UPLOAD_MB", "0.5")
    monkeypatch.setenv("UHEAD_VIZ_MAX_CHAIN_TOKENS", "800")
    assert (settings.max_rows(), settings.max_chain_tokens(), settings.max_upload_bytes()) == (7, 800, 524288)
    assert (settings.judge_timeout(), settings.judge_attempts(), settings.judge_backoff()) == (120.0, 5, 1.0)
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_TIMEOUT", "2.5")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_ATTEMPTS", "3")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BACKOFF", "0.25")
    assert (settings.judge_timeout(), settings.judge_attempts(), settings.judge_backoff()) == (2.5, 3, 0.25)


@pytest.mark.parametrize("raw", ["0", "-3", "ten", "nan", "inf", "2.5"])
def test_bad_numbers_name_their_variable(monkeypatch, raw):
    monkeypatch.setenv("UHEAD_VIZ_MAX_ROWS", raw)
    with pytest.raises(SettingError, match="UHEAD_VIZ_MAX_ROWS must be a (positive|whole) number"):
        settings.max_rows()
    assert issubclass(SettingError, InputError) and issubclass(SettingError, ValueError)


def test_bad_judge_numbers_are_judge_config_errors(monkeypatch):
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BACKOFF", "soon")
    with pytest.raises(JudgeConfigError, match="UHEAD_VIZ_JUDGE_BACKOFF must be a positive number, not 'soon'"):
        settings.judge_backoff()


def test_judge_endpoint_falls_back_to_the_openai_variables(monkeypatch):
    assert (settings.judge_base_url(), settings.judge_api_key()) == (None, "")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://a/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k1")
    assert (settings.judge_base_url(), settings.judge_api_key()) == ("http://a/v1", "k1")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BASE_URL", "http://b/v1")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_API_KEY", "k2")
    assert (settings.judge_base_url(), settings.judge_api_key()) == ("http://b/v1", "k2")


def test_the_prm_allow_list_tells_empty_from_unset(monkeypatch):
    assert settings.prm_allow() is None
    monkeypatch.setenv("UHEAD_VIZ_PRM_ALLOW", "")
    assert settings.prm_allow() == []
    monkeypatch.setenv("UHEAD_VIZ_PRM_ALLOW", " a/b , ,c/d,")
    assert settings.prm_allow() == ["a/b", "c/d"]


def test_precision_is_validated_and_lower_cased(monkeypatch):
    assert settings.precision() is None
    monkeypatch.setenv("UHEAD_VIZ_PRECISION", "BF16")
    assert settings.precision() == "bf16"
    monkeypatch.setenv("UHEAD_VIZ_PRECISION", "int4")
    with pytest.raises(SettingError, match="not a precision: use one of int8, w8, bf16, fp32"):
        settings.precision()


def test_cache_dir_follows_xdg_unless_set(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.cache_dir() == tmp_path / "xdg" / "uhead_viz"
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "mine"))
    assert settings.cache_dir() == tmp_path / "mine"
