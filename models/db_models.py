"""SQLAlchemy models of TextLoom's eight core tables, the intended state of the schema.

``sql/0001_create_core_tables.sql`` builds the same tables by hand. Every constraint and
index gets its name from ``NAMING_CONVENTION`` (or an explicit name that follows it), so
the SQL file can use the same names verbatim and a schema diff compares like with like.

Columns that the database fills in (``id``, ``created_at``, ``updated_at``) have server
defaults only. ``updated_at`` is kept current by the ``set_updated_at()`` trigger that the
SQL file installs; ``metadata.create_all`` does not create that trigger.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "textloom_core"

# Every generated name must fit PostgreSQL's 63-byte identifier limit, which tests/test_models.py checks.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Status values shared by tasks and sub-video tasks, in lifecycle order.
TASK_STATUSES = ("pending", "queued", "running", "succeeded", "failed", "cancelled")
UNFINISHED_TASK_STATUSES = ("pending", "queued", "running")

metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    """Render ``column IN ('a', 'b')`` for a CHECK constraint or an index predicate."""
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = metadata


class _CommonColumns:
    """The UUID key and the two timestamps. ``sort_order`` puts ``id`` first and the timestamps last."""

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()"), sort_order=-100,
        comment="主键，由数据库生成的 UUID",
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), sort_order=100,
        comment="创建时间",
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), sort_order=101,
        comment="最后修改时间，由触发器在每次 UPDATE 时刷新",
    )


class Persona(_CommonColumns, Base):
    __tablename__ = "personas"
    __table_args__ = (
        CheckConstraint("name ~ '^[a-z][a-z0-9_]*$'", name="name_format"),
        {"comment": "人设：生成脚本和配音时采用的角色、语气与音色"},
    )

    name: Mapped[str] = mapped_column(
        String(64), nullable=False, unique=True,
        comment="人设标识，全局唯一，只能用小写字母、数字和下划线，如 news_anchor",
    )
    display_name: Mapped[str] = mapped_column(String(128), nullable=False, comment="展示名称")
    description: Mapped[str | None] = mapped_column(Text, comment="人设说明，供运营挑选时参考")
    voice_id: Mapped[str | None] = mapped_column(String(64), comment="配音音色 ID，对应 TTS 服务里的音色")
    style: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"),
        comment="风格参数，如语气、语速、口头禅",
    )
    language: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="zh-CN", comment="默认语言，BCP 47 标签",
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("true"), comment="是否启用；停用后新项目不能再选它",
    )


class PromptTemplate(_CommonColumns, Base):
    __tablename__ = "prompt_templates"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            _in_list("purpose", ("script", "storyboard", "narration", "title", "material_analysis")),
            name="purpose",
        ),
        {"comment": "提示词模板：调用大模型生成脚本、分镜等内容时使用，按版本留存"},
    )

    name: Mapped[str] = mapped_column(String(128), nullable=False, comment="模板名称，与版本号一起唯一")
    version: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("1"), comment="版本号，从 1 开始；修改模板时新增一版",
    )
    purpose: Mapped[str] = mapped_column(String(32), nullable=False, comment="用途：脚本、分镜、旁白、标题或素材分析")
    template_text: Mapped[str] = mapped_column(Text, nullable=False, comment="模板正文，变量写成 {{变量名}}")
    variables: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb"), comment="模板用到的变量名列表",
    )
    model_params: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"),
        comment="调用大模型的参数，如 model、temperature、max_tokens",
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("true"), comment="是否启用；停用的版本只保留作历史",
    )


class VideoProject(_CommonColumns, Base):
    __tablename__ = "video_projects"
    __table_args__ = (
        CheckConstraint(
            _in_list("status", ("draft", "processing", "completed", "failed", "archived")), name="status",
        ),
        CheckConstraint("target_duration_ms > 0", name="target_duration_ms_positive"),
        {"comment": "视频项目：一次文本转视频的创作单元"},
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, nullable=False, comment="所属用户 ID，来自账号服务，不建外键",
    )
    title: Mapped[str] = mapped_column(String(200), nullable=False, comment="项目标题")
    source_text: Mapped[str] = mapped_column(Text, nullable=False, comment="用户提交的原始文本")
    language: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="zh-CN", comment="内容语言，BCP 47 标签",
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="draft",
        comment="项目状态：草稿、生成中、已完成、失败、已归档",
    )
    # RESTRICT, not SET NULL: the default persona steers every later generation, so it
    # must be replaced on purpose before the persona can be deleted.
    default_persona_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("personas.id", ondelete="RESTRICT"), index=True,
        comment="默认人设；仍被项目引用的人设不能删除，需先改掉引用",
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"),
        comment="生成设置，如分辨率、画幅比例、背景音乐、字幕样式",
    )
    target_duration_ms: Mapped[int | None] = mapped_column(Integer, comment="期望的成片时长，单位毫秒")


# The project list shows a user's newest projects first.
Index("ix_video_projects_owner_id_created_at", VideoProject.owner_id, VideoProject.created_at.desc())


class Task(_CommonColumns, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            _in_list("kind", ("script_generation", "material_analysis", "video_render", "full_pipeline")),
            name="kind",
        ),
        CheckConstraint(_in_list("status", TASK_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        CheckConstraint("attempt_count >= 0", name="attempt_count_non_negative"),
        CheckConstraint("finished_at >= started_at", name="finished_after_started"),
        {"comment": "任务：项目下的一次异步处理，如生成脚本、分析素材、渲染视频"},
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("video_projects.id", ondelete="CASCADE"), nullable=False, index=True,
        comment="所属项目；项目删除时任务一并删除",
    )
    kind: Mapped[str] = mapped_column(
        String(32), nullable=False, comment="任务类型：生成脚本、分析素材、渲染视频或整条流水线",
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="pending",
        comment="任务状态：待处理、已入队、执行中、成功、失败、已取消",
    )
    priority: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0"), comment="优先级，数值越大越先执行",
    )
    progress: Mapped[Decimal] = mapped_column(
        Numeric(5, 2), nullable=False, server_default=text("0"), comment="进度百分比，0 到 100",
    )
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), comment="任务输入参数",
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, comment="任务产出，未完成时为空")
    error_message: Mapped[str | None] = mapped_column(Text, comment="最近一次失败的错误信息")
    attempt_count: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0"), comment="已尝试执行的次数，含重试",
    )
    worker_id: Mapped[str | None] = mapped_column(String(128), comment="正在或最后执行该任务的 worker 标识")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="开始执行时间")
    finished_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="结束时间，成功、失败或取消时写入",
    )


# For workers that poll unfinished tasks by priority, then age. Finished tasks are the bulk
# of the table and are never polled, so the index leaves them out.
Index(
    "ix_tasks_unfinished", Task.priority.desc(), Task.created_at,
    postgresql_where=text(_in_list("status", UNFINISHED_TASK_STATUSES)),
)


class MediaItem(_CommonColumns, Base):
    __tablename__ = "media_items"
    __table_args__ = (
        CheckConstraint(_in_list("kind", ("image", "video", "audio", "subtitle")), name="kind"),
        CheckConstraint(_in_list("source", ("upload", "generated", "stock")), name="source"),
        CheckConstraint(_in_list("status", ("pending", "ready", "failed")), name="status"),
        CheckConstraint("file_size_bytes >= 0", name="file_size_bytes_non_negative"),
        CheckConstraint("duration_ms > 0", name="duration_ms_positive"),
        CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
        Index("ix_media_items_project_id_kind", "project_id", "kind"),
        # A project stores each file once, identified by its checksum. Rows without one are exempt.
        Index(
            "ix_media_items_project_id_checksum_sha256", "project_id", "checksum_sha256", unique=True,
            postgresql_where=text("checksum_sha256 IS NOT NULL"),
        ),
        {"comment": "媒体素材：项目里的图片、视频、音频和字幕文件，含上传的和生成的"},
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("video_projects.id", ondelete="CASCADE"), nullable=False,
        comment="所属项目；项目删除时素材记录一并删除",
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False, comment="素材类型：图片、视频、音频、字幕")
    source: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="upload", comment="来源：用户上传、模型生成或素材库",
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="pending", comment="素材状态：处理中、可用、失败",
    )
    storage_key: Mapped[str] = mapped_column(Text, nullable=False, comment="对象存储中的路径")
    original_filename: Mapped[str | None] = mapped_column(String(255), comment="上传时的原始文件名")
    mime_type: Mapped[str | None] = mapped_column(String(127), comment="MIME 类型，如 video/mp4")
    file_size_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="文件大小，单位字节")
    duration_ms: Mapped[int | None] = mapped_column(Integer, comment="时长，单位毫秒；只有音视频有")
    width: Mapped[int | None] = mapped_column(Integer, comment="画面宽度，单位像素")
    height: Mapped[int | None] = mapped_column(Integer, comment="画面高度，单位像素")
    checksum_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="文件内容的 SHA-256（十六进制），用于同一项目内去重",
    )
    properties: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), comment="其他元数据，如编码、帧率、EXIF",
    )


class MaterialAnalysis(_CommonColumns, Base):
    __tablename__ = "material_analyses"
    __table_args__ = (
        UniqueConstraint("media_item_id", "analyzer", "analyzer_version"),
        CheckConstraint(_in_list("status", ("pending", "running", "succeeded", "failed")), name="status"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        # jsonb_path_ops builds a smaller index than the default jsonb_ops and serves the
        # containment lookups that find material by label, such as result @> '{"labels": ["城市"]}'.
        # It cannot serve key-existence operators (?, ?|, ?&).
        Index(
            "ix_material_analyses_result", "result",
            postgresql_using="gin", postgresql_ops={"result": "jsonb_path_ops"},
        ),
        {"comment": "素材分析结果：模型对单个素材的识别结果，如标签、物体、语音转写"},
    )

    media_item_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("media_items.id", ondelete="CASCADE"), nullable=False,
        comment="被分析的素材；素材删除时分析结果一并删除",
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="SET NULL"), index=True,
        comment="产生该结果的任务；任务删除后结果保留",
    )
    analyzer: Mapped[str] = mapped_column(String(64), nullable=False, comment="分析模型名称，如 whisper-large-v3")
    analyzer_version: Mapped[str] = mapped_column(String(32), nullable=False, comment="分析模型版本")
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="pending", comment="分析状态：待处理、执行中、成功、失败",
    )
    summary: Mapped[str | None] = mapped_column(Text, comment="一句话描述素材内容")
    result: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), comment="分析结果：标签、物体、转写文本等",
    )
    confidence: Mapped[Decimal | None] = mapped_column(Numeric(4, 3), comment="整体置信度，0 到 1")
    error_message: Mapped[str | None] = mapped_column(Text, comment="分析失败时的错误信息")


class ScriptContent(_CommonColumns, Base):
    __tablename__ = "script_contents"
    __table_args__ = (
        UniqueConstraint("project_id", "version"),
        CheckConstraint(_in_list("status", ("draft", "generated", "approved", "rejected")), name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("word_count >= 0", name="word_count_non_negative"),
        CheckConstraint("estimated_duration_ms > 0", name="estimated_duration_ms_positive"),
        {"comment": "脚本：项目的旁白文案与分镜，每次改写存为新版本"},
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("video_projects.id", ondelete="CASCADE"), nullable=False,
        comment="所属项目；项目删除时脚本一并删除",
    )
    version: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("1"), comment="脚本版本号，同一项目内从 1 递增",
    )
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("personas.id", ondelete="SET NULL"), index=True,
        comment="生成时采用的人设；人设删除后置空，脚本保留",
    )
    prompt_template_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("prompt_templates.id", ondelete="SET NULL"), index=True,
        comment="生成时使用的提示词模板；模板删除后置空",
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="SET NULL"), index=True,
        comment="生成该脚本的任务；手写的脚本为空",
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="draft", comment="脚本状态：草稿、已生成、已采用、已驳回",
    )
    title: Mapped[str | None] = mapped_column(String(200), comment="视频标题")
    body: Mapped[str] = mapped_column(Text, nullable=False, comment="脚本正文")
    scenes: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb"),
        comment="分镜列表，每项含旁白、画面描述和建议时长",
    )
    word_count: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0"), comment="正文字数",
    )
    estimated_duration_ms: Mapped[int | None] = mapped_column(Integer, comment="按语速估算的朗读时长，单位毫秒")


class SubVideoTask(_CommonColumns, Base):
    __tablename__ = "sub_video_tasks"
    __table_args__ = (
        UniqueConstraint("task_id", "sequence_no"),
        CheckConstraint(_in_list("status", TASK_STATUSES), name="status"),
        CheckConstraint("sequence_no >= 0", name="sequence_no_non_negative"),
        CheckConstraint("duration_ms > 0", name="duration_ms_positive"),
        CheckConstraint("attempt_count >= 0", name="attempt_count_non_negative"),
        CheckConstraint("finished_at >= started_at", name="finished_after_started"),
        {"comment": "分段视频任务：渲染任务按分镜拆出的子任务，每段生成一个视频片段"},
    )

    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False,
        comment="所属渲染任务；任务删除时子任务一并删除",
    )
    sequence_no: Mapped[int] = mapped_column(
        Integer, nullable=False, comment="片段序号，从 0 开始，同一任务内唯一，决定拼接顺序",
    )
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="pending",
        comment="子任务状态：待处理、已入队、执行中、成功、失败、已取消",
    )
    narration_text: Mapped[str] = mapped_column(Text, nullable=False, comment="本段旁白文本")
    visual_prompt: Mapped[str | None] = mapped_column(Text, comment="画面生成提示词")
    source_media_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("media_items.id", ondelete="SET NULL"), index=True,
        comment="本段采用的素材；素材删除后置空",
    )
    output_media_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("media_items.id", ondelete="SET NULL"), index=True,
        comment="渲染出的视频片段；未完成时为空",
    )
    duration_ms: Mapped[int | None] = mapped_column(Integer, comment="片段时长，单位毫秒")
    render_params: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), comment="渲染参数，如转场、字幕位置、镜头运动",
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, comment="渲染产出信息，未完成时为空")
    attempt_count: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0"), comment="已尝试执行的次数，含重试",
    )
    error_message: Mapped[str | None] = mapped_column(Text, comment="最近一次失败的错误信息")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="开始执行时间")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="结束时间")
