"""The benchmark's model set as an importable module, for `invoke db.diff --models` and Alembic.

The table count comes from ``TEXTLOOM_BENCH_TABLES`` (default 1000) so that the in-process
and whole-process measurements of bench/diff.py describe the same schema.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

SCHEMA = "bench_diff"


def build_metadata(table_count: int) -> sa.MetaData:
    """Tables with a uuid key, eight more columns with defaults, a foreign key, two indexes and a comment."""
    metadata = sa.MetaData(schema=SCHEMA)
    for number in range(table_count):
        columns = [
            sa.Column("id", UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
            sa.Column("name", sa.String(64), nullable=False, index=True),
            sa.Column("title", sa.Text, server_default="untitled"),
            sa.Column("amount", sa.Numeric(12, 2), nullable=False, server_default="0"),
            sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
            sa.Column("meta", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                      index=True),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        ]
        if number > 0:
            columns.append(sa.Column("previous_id", UUID, sa.ForeignKey(f"{SCHEMA}.t{number - 1:04d}.id")))
        sa.Table(f"t{number:04d}", metadata, *columns, comment=f"benchmark table {number}")
    return metadata


metadata = build_metadata(int(os.environ.get("TEXTLOOM_BENCH_TABLES", "1000")))
