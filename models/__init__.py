"""SQLAlchemy models of TextLoom's core tables in the ``textloom_core`` schema."""

from models.db_models import (
    NAMING_CONVENTION,
    SCHEMA,
    Base,
    MaterialAnalysis,
    MediaItem,
    Persona,
    PromptTemplate,
    ScriptContent,
    SubVideoTask,
    Task,
    VideoProject,
    metadata,
)

# The eight core tables, parents before children, as db.check lists them.
TABLE_NAMES = (
    "personas",
    "prompt_templates",
    "video_projects",
    "tasks",
    "media_items",
    "material_analyses",
    "script_contents",
    "sub_video_tasks",
)

__all__ = [
    "NAMING_CONVENTION",
    "SCHEMA",
    "TABLE_NAMES",
    "Base",
    "MaterialAnalysis",
    "MediaItem",
    "Persona",
    "PromptTemplate",
    "ScriptContent",
    "SubVideoTask",
    "Task",
    "VideoProject",
    "metadata",
]
