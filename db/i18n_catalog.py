"""Keep the message catalogs in step with the code (development only, needs Babel).

``extract`` collects every ``_("...")`` call of ``db/`` and ``tasks.py``, plus the task
docstrings and option help texts that Invoke shows in ``--help`` and ``--list``.
``update`` merges them into each ``.po`` file and keeps the existing translations.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from db.i18n import DOMAIN, LOCALE_DIR

PROJECT_DIR = LOCALE_DIR.parent.parent


def task_texts() -> list[str]:
    """Docstrings and option help of every task in tasks.py, as written in English."""
    import tasks

    texts = []
    for collection in _collections(tasks.ns):
        for task in collection.tasks.values():
            doc = getattr(task.body, "__wrapped_doc__", None)
            if doc:
                texts.append(doc)
            texts.extend(getattr(task.body, "__help_en__", {}).values())
    return texts


def _collections(collection):
    yield collection
    for child in collection.collections.values():
        yield from _collections(child)


def extract() -> Catalog:
    catalog = Catalog(domain=DOMAIN)
    for folder in (PROJECT_DIR / "db", PROJECT_DIR):
        for filename, lineno, message, _comments, _context in extract_from_dir(
                str(folder), method_map=[("tasks.py", "python")] if folder == PROJECT_DIR else [("*.py", "python")],
                keywords={"_": None}):
            catalog.add(message, locations=[(str(Path(folder.name) / filename), lineno)])
    for text in task_texts():
        catalog.add(text, locations=[("tasks.py", 0)])
    return catalog


def update() -> list[Path]:
    """Merge the extracted messages into every ``.po`` file; return the files written."""
    template = extract()
    written = []
    for po_path in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        catalog.update(template, no_fuzzy_matching=True)
        with po_path.open("wb") as handle:
            write_po(handle, catalog, width=100, omit_header=False, ignore_obsolete=True)
        written.append(po_path)
    return written
