"""The settings object: defaults and computed defaults, parsing and validation errors that name
the variable, caching, and the README's configuration table matching it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import settings
from settings import Settings, SettingsError, get_settings, read_settings, reload_settings

ROOT = Path(__file__).resolve().parent.parent


def readme_table() -> list[tuple[str, str, str]]:
    """Rows ``(variable, default, meaning)`` of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Configuration"):]
    start = section.index("| variable | default | meaning |")
    rows = []
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, default, meaning = (cell.strip() for cell in line.strip().strip("|").split(" | ", 2))
        rows.append((name, default, meaning))
    return rows


def test_the_readme_table_lists_every_setting_with_its_default():
    readme = readme_table()
    expected = settings.table_rows()
    assert [r[0] for r in readme] == [r[0] for r in expected], "run `python -m settings` and paste the table"
    assert {r[0]: r[1] for r in readme} == {r[0]: r[1] for r in expected}
    assert readme == expected


def test_no_pwan_variable_is_read_outside_settings():
    """Source outside tests reads ``PWAN_*`` only through :mod:`settings`, and every variable the
    code or its docs name is one of the settings (``PWAN_TEST_*`` belong to the tests)."""
    known = {name.strip("`") for name, _, _ in settings.table_rows()}
    read = re.compile(r"""(environ\.get\(|getenv\(|environ\[)\s*["']PWAN_""")
    sources = [p for p in ROOT.rglob("*.py")
               if not {".venv", "tests", "data", "models"} & set(p.relative_to(ROOT).parts)]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text()
        for line in text.splitlines():
            if read.search(line) and path.name != "settings.py":
                assert re.search(r"environ\[[^]]+\]\s*=", line), f"{path}: {line.strip()}"  # a write is fine
        for name in re.findall(r"PWAN_[A-Z_]+[A-Z]", text):
            assert name in known or name.startswith("PWAN_TEST_"), f"{path} names {name}"


def test_defaults_and_computed_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = read_settings({})
    assert s.data_dir == tmp_path.resolve() / "data"
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'data' / 'pwan.sqlite3'}"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path.resolve() / 'data' / 'broker.sqlite3'}"
    assert (s.heartbeat_seconds, s.stale_seconds, s.reap_seconds) == (5.0, 60.0, 15.0)
    assert s.max_requeues == 1 and s.model_cache == 2 and s.visibility_timeout == 86400
    assert s.model is None and s.admin_password is None and s.trusted_proxies == () and s.preload == ()
    assert s.mini_path == ROOT / "models" / "mini"
    assert Settings() == read_settings({}) and read_settings({"PWAN_MODEL": "  "}).model is None  # blank: unset


def test_values_are_parsed_to_their_types(tmp_path):
    s = read_settings({
        "PWAN_DATA_DIR": str(tmp_path / "d"), "PWAN_DATABASE_URL": "postgresql+psycopg://db/x",
        "PWAN_STALE_SECONDS": "8", "PWAN_HEARTBEAT_SECONDS": "0.5", "PWAN_MODEL_CACHE": "3",
        "PWAN_PRELOAD": "tiny, mini,", "PWAN_TRUSTED_PROXIES": "10.0.0.0/24, 192.0.2.1",
        "PWAN_EXIT_WITH_PARENT": "4321", "PWAN_ADMIN_PASSWORD": "hunter2",
    })
    assert s.data_dir == tmp_path / "d" and s.database_url == "postgresql+psycopg://db/x"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path / 'd' / 'broker.sqlite3'}"
    assert (s.stale_seconds, s.reap_seconds, s.model_cache) == (8.0, 2.0, 3)
    assert s.preload == ("tiny", "mini") and s.exit_with_parent == 4321
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/24", "192.0.2.1/32"]
    assert "hunter2" not in repr(s)  # the password stays out of logs


@pytest.mark.parametrize("env, message", [
    ({"PWAN_MODEL_CACHE": "two"}, "PWAN_MODEL_CACHE='two' is not a whole number"),
    ({"PWAN_MAX_REQUEUES": "1.5"}, "PWAN_MAX_REQUEUES='1.5' is not a whole number"),
    ({"PWAN_HEARTBEAT_SECONDS": "fast"}, "PWAN_HEARTBEAT_SECONDS='fast' is not a number"),
    ({"PWAN_MODEL_CACHE": "0"}, "PWAN_MODEL_CACHE=0 must be at least 1"),
    ({"PWAN_MAX_REQUEUES": "-1"}, "PWAN_MAX_REQUEUES=-1 must be at least 0"),
    ({"PWAN_VISIBILITY_TIMEOUT": "59"}, "PWAN_VISIBILITY_TIMEOUT=59 must be at least 60"),
    ({"PWAN_PROGRESS_SECONDS": "0"}, "PWAN_PROGRESS_SECONDS=0.0 must be greater than 0"),
    ({"PWAN_REAP_SECONDS": "-2"}, "PWAN_REAP_SECONDS=-2.0 must be greater than 0"),
    ({"PWAN_ADMIN_MAX_FAILURES": "0"}, "PWAN_ADMIN_MAX_FAILURES=0 must be at least 1"),
    ({"PWAN_TRUSTED_PROXIES": "10.0.0.0/33"}, "PWAN_TRUSTED_PROXIES: '10.0.0.0/33' is not an IP address"),
])
def test_bad_values_are_refused_naming_the_variable(env, message):
    with pytest.raises(SettingsError) as caught:
        read_settings(env)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_stale_must_be_at_least_twice_the_heartbeat():
    with pytest.raises(SettingsError, match=r"PWAN_STALE_SECONDS \(9\) must be at least twice "
                                            r"PWAN_HEARTBEAT_SECONDS \(5\)"):
        read_settings({"PWAN_STALE_SECONDS": "9"})
    with pytest.raises(SettingsError, match="PWAN_STALE_SECONDS"):
        Settings(heartbeat_seconds=2.0, stale_seconds=3.0)
    assert read_settings({"PWAN_STALE_SECONDS": "10"}).reap_seconds == 2.5


def test_get_settings_reads_once_until_reloaded(monkeypatch):
    monkeypatch.setenv("PWAN_MODEL_CACHE", "4")
    first = get_settings()
    assert first.model_cache == 4 and get_settings() is first
    import os

    os.environ["PWAN_MODEL_CACHE"] = "5"  # behind monkeypatch's back: not seen until a reload
    try:
        assert get_settings().model_cache == 4
        reload_settings()
        assert get_settings().model_cache == 5
    finally:
        del os.environ["PWAN_MODEL_CACHE"]
        reload_settings()
    monkeypatch.setenv("PWAN_MODEL_CACHE", "6")  # the tests' monkeypatch reloads for us
    assert get_settings().model_cache == 6


def test_a_child_process_reads_its_own_environment(tmp_path):
    env = {"PWAN_DATA_DIR": str(tmp_path), "PWAN_PRELOAD": "tiny", "PATH": "/usr/bin:/bin"}
    code = "from settings import get_settings; s = get_settings(); print(s.data_dir, ','.join(s.preload))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path), "tiny"]


def test_settings_imports_nothing_heavy():
    code = ("import sys, settings; heavy = {'torch', 'sqlalchemy', 'celery', 'gradio', 'core', 'db'}"
            " & set(sys.modules); print(sorted(heavy))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_overridden_sets_variables_for_a_block_and_puts_back_what_was_there(monkeypatch, tmp_path):
    monkeypatch.setenv("PWAN_MINI_PATH", str(tmp_path / "before"))
    monkeypatch.delenv("PWAN_MODEL", raising=False)
    with settings.overridden(PWAN_MINI_PATH=str(tmp_path / "inside"), PWAN_MODEL="tiny") as inside:
        assert inside.mini_path == tmp_path / "inside" and get_settings().model == "tiny"
    assert get_settings().mini_path == tmp_path / "before"
    assert "PWAN_MODEL" not in os.environ
    with pytest.raises(RuntimeError), settings.overridden(PWAN_MINI_PATH=str(tmp_path / "x")):
        raise RuntimeError("the block failed")
    assert get_settings().mini_path == tmp_path / "before"
