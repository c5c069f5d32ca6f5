"""The zh_CN catalog: complete, safe to format, compiled, chosen by the environment, and shown by the tasks."""

from __future__ import annotations

import gettext
import json
import re
import string

import pytest
from babel.messages.pofile import read_po

from db import history, i18n, report, verify
from db.i18n_catalog import extract, task_texts
from test_tasks import invoke

PO_PATH = i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
MO_PATH = PO_PATH.with_suffix(".mo")

# Chinese characters (CJK Unified Ideographs); every translation contains some.
CJK = r"[\u4e00-\u9fff]"
# An ASCII comma, semicolon, colon or bracket touching a Chinese character: Chinese text uses
# the full-width forms (，；：（）).
HALF_WIDTH_NEXT_TO_CJK = re.compile(rf"{CJK}[,;:()]|[,;:()]{CJK}")
CODE_SPAN = re.compile(r"`[^`]*`")


@pytest.fixture(scope="module")
def messages() -> list:
    """Every translatable message of the .po file, header excluded."""
    with PO_PATH.open("rb") as handle:
        return [message for message in read_po(handle) if message.id]


@pytest.fixture(scope="module")
def zh() -> gettext.GNUTranslations:
    with MO_PATH.open("rb") as handle:
        return gettext.GNUTranslations(handle)


def fields(text: str) -> set[tuple[str, str, str | None]]:
    """The ``{placeholders}`` of a str.format string as (name, format spec, conversion)."""
    return {(name, spec, conversion) for _literal, name, spec, conversion in string.Formatter().parse(text)
            if name is not None}


def dummy_values(text: str) -> dict[str, object]:
    # A format spec such as ``.0f`` needs a number; plain fields take any string.
    return {re.match(r"\w*", name).group(): 1.5 if spec else "x" for name, spec, _conversion in fields(text)}


# --- the catalog ------------------------------------------------------------------------


def test_template_fully_translated(messages):
    by_id = {message.id: message for message in messages}
    template_ids = [message.id for message in extract() if message.id]

    missing = [msgid for msgid in template_ids if msgid not in by_id]
    empty = [msgid for msgid in template_ids if msgid in by_id and not by_id[msgid].string]
    fuzzy = [msgid for msgid in template_ids if msgid in by_id and by_id[msgid].fuzzy]
    assert template_ids
    assert missing == [], "run `uv run invoke i18n.update`, then translate"
    assert empty == []
    assert fuzzy == []


def test_translations_keep_placeholders(messages):
    mismatched = []
    for message in messages:
        try:
            expected, actual = fields(message.id), fields(message.string)
        except ValueError as exc:  # an unbalanced brace
            mismatched.append((message.id, str(exc)))
            continue
        if expected != actual:
            mismatched.append((message.id, sorted(expected ^ actual)))
    assert mismatched == []


def test_translations_drop_no_placeholder(messages):
    dropped = [(message.id, sorted(fields(message.id) - fields(message.string))) for message in messages
               if fields(message.id) - fields(message.string)]
    assert dropped == []


def test_translations_format_with_values(messages):
    failures = []
    for message in messages:
        values = dummy_values(message.id)
        try:
            message.string.format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            failures.append((message.id, repr(exc)))
    assert failures == []


def test_translations_keep_code_and_lines(messages):
    code_changed = [message.id for message in messages
                    if sorted(CODE_SPAN.findall(message.id)) != sorted(CODE_SPAN.findall(message.string))]
    lines_changed = [message.id for message in messages if message.id.count("\n") != message.string.count("\n")]
    assert code_changed == []
    assert lines_changed == []


def test_translations_read_as_chinese(messages):
    untranslated = [message.id for message in messages if not re.search(CJK, message.string)]
    half_width = [message.string for message in messages
                  if HALF_WIDTH_NEXT_TO_CJK.search(CODE_SPAN.sub("", message.string))]
    assert untranslated == []
    assert half_width == [], "use ，；：（） in Chinese sentences"


def test_mo_matches_po(messages, zh):
    compiled = {msgid: text for msgid, text in zh._catalog.items() if msgid}
    expected = {message.id: message.string for message in messages if message.string and not message.fuzzy}
    assert compiled.keys() == expected.keys(), "run `uv run invoke i18n.compile`"
    assert [msgid for msgid in expected if compiled[msgid] != expected[msgid]] == []


# --- language selection -----------------------------------------------------------------


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, "en"),
    ({"TEXTLOOM_LANG": "zh_CN"}, "zh_CN"),
    ({"TEXTLOOM_LANG": "zh"}, "zh_CN"),
    ({"TEXTLOOM_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"TEXTLOOM_LANG": " ", "LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LC_ALL": "C"}, "en"),
    ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_ALL": "zh_CN.UTF-8", "LC_MESSAGES": "C"}, "zh_CN"),
    ({"LC_MESSAGES": "zh_TW", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"LC_MESSAGES": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_ALL": "", "LC_MESSAGES": "", "LANG": "zh_SG.UTF-8"}, "zh_CN"),
])
def test_language_from_environment(monkeypatch, variables, expected):
    for name in ("TEXTLOOM_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    i18n._catalog.cache_clear()

    english = "Nothing to repair."
    assert i18n.language() == expected
    if expected == "en":
        assert i18n._(english) == english
    else:
        assert i18n._(english) == "无需修复。"


def test_zh_catalog_loads_mo():
    i18n._catalog.cache_clear()
    assert isinstance(i18n._catalog("zh_CN"), gettext.GNUTranslations)


def test_placeholders_filled_after_translation(monkeypatch):
    monkeypatch.setenv("TEXTLOOM_LANG", "zh_CN")
    assert i18n._("Created schema {schema}.", schema="app") == "已创建模式 app。"


@pytest.mark.parametrize("status", [verify.OK, verify.WARNING, verify.FAILED, verify.SKIPPED, history.STATUS_APPLIED,
                                    history.STATUS_BASELINED, history.STATUS_RUNNING, history.STATUS_FAILED,
                                    "pending", "changed", "missing file"])
def test_status_labels_translated(monkeypatch, status):
    monkeypatch.setenv("TEXTLOOM_LANG", "zh_CN")
    assert re.search(CJK, report.label(status))


# --- the tasks, end to end --------------------------------------------------------------

CHINESE = {"TEXTLOOM_LANG": "", "LANG": "zh_CN.UTF-8"}
C_LOCALE = {"TEXTLOOM_LANG": "", "LANG": "C"}
VERIFY_HEADINGS = ("check", "status", "detail", "hint")
CHECK_NAMES = ("connection", "server version", "server role", "schema", "tables match the models", "migrations",
               "migration lock", "trigger function", "privileges", "superuser", "pgbouncer compatibility",
               "TextLoom service")


def task_docstrings() -> list[str]:
    import tasks

    return [task.body.__wrapped_doc__ for collection in (tasks.db, tasks.db.collections["server"], tasks.i18n)
            for task in collection.tasks.values()]


def unwrapped(text: str) -> str:
    # Invoke wraps long help lines at the terminal width.
    return " ".join(text.split())


def test_list_in_chinese(zh):
    result = invoke("--list", env=CHINESE)
    assert result.returncode == 0, result.stderr
    listing = unwrapped(result.stdout)
    for doc in task_docstrings():
        assert unwrapped(zh.gettext(doc)) in listing
        assert unwrapped(doc) not in listing


def test_list_in_english():
    result = invoke("--list", env=C_LOCALE)
    assert result.returncode == 0, result.stderr
    listing = unwrapped(result.stdout)
    for doc in task_docstrings():
        assert unwrapped(doc) in listing


def test_option_help_in_chinese(zh):
    result = invoke("--help", "db.migrate", env=CHINESE)
    assert result.returncode == 0, result.stderr
    assert zh.gettext("print the plan and change nothing") in unwrapped(result.stdout)
    assert "print the plan and change nothing" not in unwrapped(result.stdout)


def test_task_texts_all_extracted(messages):
    ids = {message.id for message in messages}
    assert [text for text in task_texts() if text not in ids] == []


@pytest.fixture
def db_env(db_url: str, schema: str) -> dict[str, str]:
    result = invoke("db.create", env={"DATABASE_URL": db_url, "TEXTLOOM_DB_SCHEMA": schema})
    assert result.returncode == 0, result.stderr
    return {"DATABASE_URL": db_url, "TEXTLOOM_DB_SCHEMA": schema}


def test_verify_in_chinese(db_env, zh):
    result = invoke("db.verify", env={**db_env, "TEXTLOOM_LANG": "zh_CN"})
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    for heading in VERIFY_HEADINGS:
        assert zh.gettext(heading) in header
    for name in CHECK_NAMES:
        assert zh.gettext(name) in result.stdout
    assert zh.gettext("ok") in result.stdout
    assert "tables match the models" not in result.stdout
    assert "migration lock" not in result.stdout


def test_verify_in_english(db_env):
    result = invoke("db.verify", env={**db_env, **C_LOCALE})
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == list(VERIFY_HEADINGS)
    for name in CHECK_NAMES:
        assert name in result.stdout
    assert re.search(CJK, result.stdout) is None


def test_verify_json_keys_english(db_env, zh):
    result = invoke("db.verify", "--json", env={**db_env, **CHINESE})
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"healthy", "checks"}
    assert document["healthy"] is True
    for check in document["checks"]:
        assert set(check) == {"name", "status", "detail", "hint"}
        assert check["status"] in (verify.OK, verify.WARNING, verify.SKIPPED)
    assert zh.gettext("migration lock") in [check["name"] for check in document["checks"]]


def test_errors_in_chinese(db_url, zh):
    result = invoke("db.resolve", "abc", env={**CHINESE, "DATABASE_URL": db_url})
    assert result.returncode == 2, result.stderr
    assert zh.gettext("error: {message}").split("{")[0] in result.stderr
    assert "invalid version" not in result.stderr
