-- Create TextLoom's eight core tables with their constraints, indexes, comments and the
-- trigger that keeps updated_at current. The migration runner replaces ${schema} with the
-- quoted schema name, creates the schema before the first file, and runs this file in one
-- transaction.

-- Sets updated_at on every UPDATE, so application code cannot forget to.
CREATE FUNCTION ${schema}.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;


CREATE TABLE ${schema}.personas (
    id           uuid DEFAULT gen_random_uuid() NOT NULL,
    name         varchar(64) NOT NULL,
    display_name varchar(128) NOT NULL,
    description  text,
    voice_id     varchar(64),
    style        jsonb DEFAULT '{}'::jsonb NOT NULL,
    language     varchar(16) DEFAULT 'zh-CN' NOT NULL,
    is_active    boolean DEFAULT true NOT NULL,
    created_at   timestamptz DEFAULT now() NOT NULL,
    updated_at   timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_personas PRIMARY KEY (id),
    CONSTRAINT uq_personas_name UNIQUE (name),
    CONSTRAINT ck_personas_name_format CHECK (name ~ '^[a-z][a-z0-9_]*$')
);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.personas
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.personas IS '人设：生成脚本和配音时采用的角色、语气与音色';
COMMENT ON COLUMN ${schema}.personas.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.personas.name IS '人设标识，全局唯一，只能用小写字母、数字和下划线，如 news_anchor';
COMMENT ON COLUMN ${schema}.personas.display_name IS '展示名称';
COMMENT ON COLUMN ${schema}.personas.description IS '人设说明，供运营挑选时参考';
COMMENT ON COLUMN ${schema}.personas.voice_id IS '配音音色 ID，对应 TTS 服务里的音色';
COMMENT ON COLUMN ${schema}.personas.style IS '风格参数，如语气、语速、口头禅';
COMMENT ON COLUMN ${schema}.personas.language IS '默认语言，BCP 47 标签';
COMMENT ON COLUMN ${schema}.personas.is_active IS '是否启用；停用后新项目不能再选它';
COMMENT ON COLUMN ${schema}.personas.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.personas.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.prompt_templates (
    id            uuid DEFAULT gen_random_uuid() NOT NULL,
    name          varchar(128) NOT NULL,
    version       integer DEFAULT 1 NOT NULL,
    purpose       varchar(32) NOT NULL,
    template_text text NOT NULL,
    variables     jsonb DEFAULT '[]'::jsonb NOT NULL,
    model_params  jsonb DEFAULT '{}'::jsonb NOT NULL,
    is_active     boolean DEFAULT true NOT NULL,
    created_at    timestamptz DEFAULT now() NOT NULL,
    updated_at    timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_prompt_templates PRIMARY KEY (id),
    CONSTRAINT uq_prompt_templates_name_version UNIQUE (name, version),
    CONSTRAINT ck_prompt_templates_version_positive CHECK (version >= 1),
    CONSTRAINT ck_prompt_templates_purpose
        CHECK (purpose IN ('script', 'storyboard', 'narration', 'title', 'material_analysis'))
);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.prompt_templates
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.prompt_templates IS '提示词模板：调用大模型生成脚本、分镜等内容时使用，按版本留存';
COMMENT ON COLUMN ${schema}.prompt_templates.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.prompt_templates.name IS '模板名称，与版本号一起唯一';
COMMENT ON COLUMN ${schema}.prompt_templates.version IS '版本号，从 1 开始；修改模板时新增一版';
COMMENT ON COLUMN ${schema}.prompt_templates.purpose IS '用途：脚本、分镜、旁白、标题或素材分析';
COMMENT ON COLUMN ${schema}.prompt_templates.template_text IS '模板正文，变量写成 {{变量名}}';
COMMENT ON COLUMN ${schema}.prompt_templates.variables IS '模板用到的变量名列表';
COMMENT ON COLUMN ${schema}.prompt_templates.model_params IS '调用大模型的参数，如 model、temperature、max_tokens';
COMMENT ON COLUMN ${schema}.prompt_templates.is_active IS '是否启用；停用的版本只保留作历史';
COMMENT ON COLUMN ${schema}.prompt_templates.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.prompt_templates.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.video_projects (
    id                 uuid DEFAULT gen_random_uuid() NOT NULL,
    owner_id           uuid NOT NULL,
    title              varchar(200) NOT NULL,
    source_text        text NOT NULL,
    language           varchar(16) DEFAULT 'zh-CN' NOT NULL,
    status             varchar(20) DEFAULT 'draft' NOT NULL,
    default_persona_id uuid,
    settings           jsonb DEFAULT '{}'::jsonb NOT NULL,
    target_duration_ms integer,
    created_at         timestamptz DEFAULT now() NOT NULL,
    updated_at         timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_video_projects PRIMARY KEY (id),
    -- RESTRICT: the default persona steers every later generation, so it must be
    -- replaced on purpose before the persona can be deleted.
    CONSTRAINT fk_video_projects_default_persona_id_personas FOREIGN KEY (default_persona_id)
        REFERENCES ${schema}.personas (id) ON DELETE RESTRICT,
    CONSTRAINT ck_video_projects_status
        CHECK (status IN ('draft', 'processing', 'completed', 'failed', 'archived')),
    CONSTRAINT ck_video_projects_target_duration_ms_positive CHECK (target_duration_ms > 0)
);

CREATE INDEX ix_video_projects_default_persona_id ON ${schema}.video_projects (default_persona_id);
-- The project list shows a user's newest projects first.
CREATE INDEX ix_video_projects_owner_id_created_at ON ${schema}.video_projects (owner_id, created_at DESC);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.video_projects
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.video_projects IS '视频项目：一次文本转视频的创作单元';
COMMENT ON COLUMN ${schema}.video_projects.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.video_projects.owner_id IS '所属用户 ID，来自账号服务，不建外键';
COMMENT ON COLUMN ${schema}.video_projects.title IS '项目标题';
COMMENT ON COLUMN ${schema}.video_projects.source_text IS '用户提交的原始文本';
COMMENT ON COLUMN ${schema}.video_projects.language IS '内容语言，BCP 47 标签';
COMMENT ON COLUMN ${schema}.video_projects.status IS '项目状态：草稿、生成中、已完成、失败、已归档';
COMMENT ON COLUMN ${schema}.video_projects.default_persona_id IS '默认人设；仍被项目引用的人设不能删除，需先改掉引用';
COMMENT ON COLUMN ${schema}.video_projects.settings IS '生成设置，如分辨率、画幅比例、背景音乐、字幕样式';
COMMENT ON COLUMN ${schema}.video_projects.target_duration_ms IS '期望的成片时长，单位毫秒';
COMMENT ON COLUMN ${schema}.video_projects.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.video_projects.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.tasks (
    id            uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id    uuid NOT NULL,
    kind          varchar(32) NOT NULL,
    status        varchar(20) DEFAULT 'pending' NOT NULL,
    priority      integer DEFAULT 0 NOT NULL,
    progress      numeric(5, 2) DEFAULT 0 NOT NULL,
    payload       jsonb DEFAULT '{}'::jsonb NOT NULL,
    result        jsonb,
    error_message text,
    attempt_count integer DEFAULT 0 NOT NULL,
    worker_id     varchar(128),
    started_at    timestamptz,
    finished_at   timestamptz,
    created_at    timestamptz DEFAULT now() NOT NULL,
    updated_at    timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_tasks PRIMARY KEY (id),
    CONSTRAINT fk_tasks_project_id_video_projects FOREIGN KEY (project_id)
        REFERENCES ${schema}.video_projects (id) ON DELETE CASCADE,
    CONSTRAINT ck_tasks_kind
        CHECK (kind IN ('script_generation', 'material_analysis', 'video_render', 'full_pipeline')),
    CONSTRAINT ck_tasks_status
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT ck_tasks_progress_range CHECK (progress >= 0 AND progress <= 100),
    CONSTRAINT ck_tasks_attempt_count_non_negative CHECK (attempt_count >= 0),
    CONSTRAINT ck_tasks_finished_after_started CHECK (finished_at >= started_at)
);

CREATE INDEX ix_tasks_project_id ON ${schema}.tasks (project_id);
-- For workers that poll unfinished tasks by priority, then age. Finished tasks are the bulk
-- of the table and are never polled, so the index leaves them out.
CREATE INDEX ix_tasks_unfinished ON ${schema}.tasks (priority DESC, created_at)
    WHERE status IN ('pending', 'queued', 'running');

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.tasks
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.tasks IS '任务：项目下的一次异步处理，如生成脚本、分析素材、渲染视频';
COMMENT ON COLUMN ${schema}.tasks.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.tasks.project_id IS '所属项目；项目删除时任务一并删除';
COMMENT ON COLUMN ${schema}.tasks.kind IS '任务类型：生成脚本、分析素材、渲染视频或整条流水线';
COMMENT ON COLUMN ${schema}.tasks.status IS '任务状态：待处理、已入队、执行中、成功、失败、已取消';
COMMENT ON COLUMN ${schema}.tasks.priority IS '优先级，数值越大越先执行';
COMMENT ON COLUMN ${schema}.tasks.progress IS '进度百分比，0 到 100';
COMMENT ON COLUMN ${schema}.tasks.payload IS '任务输入参数';
COMMENT ON COLUMN ${schema}.tasks.result IS '任务产出，未完成时为空';
COMMENT ON COLUMN ${schema}.tasks.error_message IS '最近一次失败的错误信息';
COMMENT ON COLUMN ${schema}.tasks.attempt_count IS '已尝试执行的次数，含重试';
COMMENT ON COLUMN ${schema}.tasks.worker_id IS '正在或最后执行该任务的 worker 标识';
COMMENT ON COLUMN ${schema}.tasks.started_at IS '开始执行时间';
COMMENT ON COLUMN ${schema}.tasks.finished_at IS '结束时间，成功、失败或取消时写入';
COMMENT ON COLUMN ${schema}.tasks.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.tasks.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.media_items (
    id                uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id        uuid NOT NULL,
    kind              varchar(16) NOT NULL,
    source            varchar(16) DEFAULT 'upload' NOT NULL,
    status            varchar(20) DEFAULT 'pending' NOT NULL,
    storage_key       text NOT NULL,
    original_filename varchar(255),
    mime_type         varchar(127),
    file_size_bytes   bigint,
    duration_ms       integer,
    width             integer,
    height            integer,
    checksum_sha256   varchar(64),
    properties        jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at        timestamptz DEFAULT now() NOT NULL,
    updated_at        timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_media_items PRIMARY KEY (id),
    CONSTRAINT fk_media_items_project_id_video_projects FOREIGN KEY (project_id)
        REFERENCES ${schema}.video_projects (id) ON DELETE CASCADE,
    CONSTRAINT ck_media_items_kind CHECK (kind IN ('image', 'video', 'audio', 'subtitle')),
    CONSTRAINT ck_media_items_source CHECK (source IN ('upload', 'generated', 'stock')),
    CONSTRAINT ck_media_items_status CHECK (status IN ('pending', 'ready', 'failed')),
    CONSTRAINT ck_media_items_file_size_bytes_non_negative CHECK (file_size_bytes >= 0),
    CONSTRAINT ck_media_items_duration_ms_positive CHECK (duration_ms > 0),
    CONSTRAINT ck_media_items_dimensions_positive CHECK (width > 0 AND height > 0)
);

-- A project stores each file once, identified by its checksum. Rows without one are exempt.
CREATE UNIQUE INDEX ix_media_items_project_id_checksum_sha256
    ON ${schema}.media_items (project_id, checksum_sha256)
    WHERE checksum_sha256 IS NOT NULL;
CREATE INDEX ix_media_items_project_id_kind ON ${schema}.media_items (project_id, kind);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.media_items
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.media_items IS '媒体素材：项目里的图片、视频、音频和字幕文件，含上传的和生成的';
COMMENT ON COLUMN ${schema}.media_items.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.media_items.project_id IS '所属项目；项目删除时素材记录一并删除';
COMMENT ON COLUMN ${schema}.media_items.kind IS '素材类型：图片、视频、音频、字幕';
COMMENT ON COLUMN ${schema}.media_items.source IS '来源：用户上传、模型生成或素材库';
COMMENT ON COLUMN ${schema}.media_items.status IS '素材状态：处理中、可用、失败';
COMMENT ON COLUMN ${schema}.media_items.storage_key IS '对象存储中的路径';
COMMENT ON COLUMN ${schema}.media_items.original_filename IS '上传时的原始文件名';
COMMENT ON COLUMN ${schema}.media_items.mime_type IS 'MIME 类型，如 video/mp4';
COMMENT ON COLUMN ${schema}.media_items.file_size_bytes IS '文件大小，单位字节';
COMMENT ON COLUMN ${schema}.media_items.duration_ms IS '时长，单位毫秒；只有音视频有';
COMMENT ON COLUMN ${schema}.media_items.width IS '画面宽度，单位像素';
COMMENT ON COLUMN ${schema}.media_items.height IS '画面高度，单位像素';
COMMENT ON COLUMN ${schema}.media_items.checksum_sha256 IS '文件内容的 SHA-256（十六进制），用于同一项目内去重';
COMMENT ON COLUMN ${schema}.media_items.properties IS '其他元数据，如编码、帧率、EXIF';
COMMENT ON COLUMN ${schema}.media_items.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.media_items.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.material_analyses (
    id               uuid DEFAULT gen_random_uuid() NOT NULL,
    media_item_id    uuid NOT NULL,
    task_id          uuid,
    analyzer         varchar(64) NOT NULL,
    analyzer_version varchar(32) NOT NULL,
    status           varchar(20) DEFAULT 'pending' NOT NULL,
    summary          text,
    result           jsonb DEFAULT '{}'::jsonb NOT NULL,
    confidence       numeric(4, 3),
    error_message    text,
    created_at       timestamptz DEFAULT now() NOT NULL,
    updated_at       timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_material_analyses PRIMARY KEY (id),
    CONSTRAINT uq_material_analyses_media_item_id_analyzer_analyzer_version
        UNIQUE (media_item_id, analyzer, analyzer_version),
    CONSTRAINT fk_material_analyses_media_item_id_media_items FOREIGN KEY (media_item_id)
        REFERENCES ${schema}.media_items (id) ON DELETE CASCADE,
    CONSTRAINT fk_material_analyses_task_id_tasks FOREIGN KEY (task_id)
        REFERENCES ${schema}.tasks (id) ON DELETE SET NULL,
    CONSTRAINT ck_material_analyses_status
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    CONSTRAINT ck_material_analyses_confidence_range CHECK (confidence >= 0 AND confidence <= 1)
);

-- jsonb_path_ops builds a smaller index than the default jsonb_ops and serves the
-- containment lookups that find material by label, such as result @> '{"labels": ["城市"]}'.
-- It cannot serve key-existence operators (?, ?|, ?&).
CREATE INDEX ix_material_analyses_result ON ${schema}.material_analyses USING gin (result jsonb_path_ops);
CREATE INDEX ix_material_analyses_task_id ON ${schema}.material_analyses (task_id);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.material_analyses
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.material_analyses IS '素材分析结果：模型对单个素材的识别结果，如标签、物体、语音转写';
COMMENT ON COLUMN ${schema}.material_analyses.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.material_analyses.media_item_id IS '被分析的素材；素材删除时分析结果一并删除';
COMMENT ON COLUMN ${schema}.material_analyses.task_id IS '产生该结果的任务；任务删除后结果保留';
COMMENT ON COLUMN ${schema}.material_analyses.analyzer IS '分析模型名称，如 whisper-large-v3';
COMMENT ON COLUMN ${schema}.material_analyses.analyzer_version IS '分析模型版本';
COMMENT ON COLUMN ${schema}.material_analyses.status IS '分析状态：待处理、执行中、成功、失败';
COMMENT ON COLUMN ${schema}.material_analyses.summary IS '一句话描述素材内容';
COMMENT ON COLUMN ${schema}.material_analyses.result IS '分析结果：标签、物体、转写文本等';
COMMENT ON COLUMN ${schema}.material_analyses.confidence IS '整体置信度，0 到 1';
COMMENT ON COLUMN ${schema}.material_analyses.error_message IS '分析失败时的错误信息';
COMMENT ON COLUMN ${schema}.material_analyses.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.material_analyses.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.script_contents (
    id                    uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id            uuid NOT NULL,
    version               integer DEFAULT 1 NOT NULL,
    persona_id            uuid,
    prompt_template_id    uuid,
    task_id               uuid,
    status                varchar(20) DEFAULT 'draft' NOT NULL,
    title                 varchar(200),
    body                  text NOT NULL,
    scenes                jsonb DEFAULT '[]'::jsonb NOT NULL,
    word_count            integer DEFAULT 0 NOT NULL,
    estimated_duration_ms integer,
    created_at            timestamptz DEFAULT now() NOT NULL,
    updated_at            timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_script_contents PRIMARY KEY (id),
    CONSTRAINT uq_script_contents_project_id_version UNIQUE (project_id, version),
    CONSTRAINT fk_script_contents_project_id_video_projects FOREIGN KEY (project_id)
        REFERENCES ${schema}.video_projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_script_contents_persona_id_personas FOREIGN KEY (persona_id)
        REFERENCES ${schema}.personas (id) ON DELETE SET NULL,
    CONSTRAINT fk_script_contents_prompt_template_id_prompt_templates FOREIGN KEY (prompt_template_id)
        REFERENCES ${schema}.prompt_templates (id) ON DELETE SET NULL,
    CONSTRAINT fk_script_contents_task_id_tasks FOREIGN KEY (task_id)
        REFERENCES ${schema}.tasks (id) ON DELETE SET NULL,
    CONSTRAINT ck_script_contents_status
        CHECK (status IN ('draft', 'generated', 'approved', 'rejected')),
    CONSTRAINT ck_script_contents_version_positive CHECK (version >= 1),
    CONSTRAINT ck_script_contents_word_count_non_negative CHECK (word_count >= 0),
    CONSTRAINT ck_script_contents_estimated_duration_ms_positive CHECK (estimated_duration_ms > 0)
);

CREATE INDEX ix_script_contents_persona_id ON ${schema}.script_contents (persona_id);
CREATE INDEX ix_script_contents_prompt_template_id ON ${schema}.script_contents (prompt_template_id);
CREATE INDEX ix_script_contents_task_id ON ${schema}.script_contents (task_id);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.script_contents
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.script_contents IS '脚本：项目的旁白文案与分镜，每次改写存为新版本';
COMMENT ON COLUMN ${schema}.script_contents.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.script_contents.project_id IS '所属项目；项目删除时脚本一并删除';
COMMENT ON COLUMN ${schema}.script_contents.version IS '脚本版本号，同一项目内从 1 递增';
COMMENT ON COLUMN ${schema}.script_contents.persona_id IS '生成时采用的人设；人设删除后置空，脚本保留';
COMMENT ON COLUMN ${schema}.script_contents.prompt_template_id IS '生成时使用的提示词模板；模板删除后置空';
COMMENT ON COLUMN ${schema}.script_contents.task_id IS '生成该脚本的任务；手写的脚本为空';
COMMENT ON COLUMN ${schema}.script_contents.status IS '脚本状态：草稿、已生成、已采用、已驳回';
COMMENT ON COLUMN ${schema}.script_contents.title IS '视频标题';
COMMENT ON COLUMN ${schema}.script_contents.body IS '脚本正文';
COMMENT ON COLUMN ${schema}.script_contents.scenes IS '分镜列表，每项含旁白、画面描述和建议时长';
COMMENT ON COLUMN ${schema}.script_contents.word_count IS '正文字数';
COMMENT ON COLUMN ${schema}.script_contents.estimated_duration_ms IS '按语速估算的朗读时长，单位毫秒';
COMMENT ON COLUMN ${schema}.script_contents.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.script_contents.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';


CREATE TABLE ${schema}.sub_video_tasks (
    id              uuid DEFAULT gen_random_uuid() NOT NULL,
    task_id         uuid NOT NULL,
    sequence_no     integer NOT NULL,
    status          varchar(20) DEFAULT 'pending' NOT NULL,
    narration_text  text NOT NULL,
    visual_prompt   text,
    source_media_id uuid,
    output_media_id uuid,
    duration_ms     integer,
    render_params   jsonb DEFAULT '{}'::jsonb NOT NULL,
    result          jsonb,
    attempt_count   integer DEFAULT 0 NOT NULL,
    error_message   text,
    started_at      timestamptz,
    finished_at     timestamptz,
    created_at      timestamptz DEFAULT now() NOT NULL,
    updated_at      timestamptz DEFAULT now() NOT NULL,
    CONSTRAINT pk_sub_video_tasks PRIMARY KEY (id),
    CONSTRAINT uq_sub_video_tasks_task_id_sequence_no UNIQUE (task_id, sequence_no),
    CONSTRAINT fk_sub_video_tasks_task_id_tasks FOREIGN KEY (task_id)
        REFERENCES ${schema}.tasks (id) ON DELETE CASCADE,
    CONSTRAINT fk_sub_video_tasks_source_media_id_media_items FOREIGN KEY (source_media_id)
        REFERENCES ${schema}.media_items (id) ON DELETE SET NULL,
    CONSTRAINT fk_sub_video_tasks_output_media_id_media_items FOREIGN KEY (output_media_id)
        REFERENCES ${schema}.media_items (id) ON DELETE SET NULL,
    CONSTRAINT ck_sub_video_tasks_status
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT ck_sub_video_tasks_sequence_no_non_negative CHECK (sequence_no >= 0),
    CONSTRAINT ck_sub_video_tasks_duration_ms_positive CHECK (duration_ms > 0),
    CONSTRAINT ck_sub_video_tasks_attempt_count_non_negative CHECK (attempt_count >= 0),
    CONSTRAINT ck_sub_video_tasks_finished_after_started CHECK (finished_at >= started_at)
);

CREATE INDEX ix_sub_video_tasks_output_media_id ON ${schema}.sub_video_tasks (output_media_id);
CREATE INDEX ix_sub_video_tasks_source_media_id ON ${schema}.sub_video_tasks (source_media_id);

CREATE TRIGGER trg_set_updated_at BEFORE UPDATE ON ${schema}.sub_video_tasks
    FOR EACH ROW EXECUTE FUNCTION ${schema}.set_updated_at();

COMMENT ON TABLE ${schema}.sub_video_tasks IS '分段视频任务：渲染任务按分镜拆出的子任务，每段生成一个视频片段';
COMMENT ON COLUMN ${schema}.sub_video_tasks.id IS '主键，由数据库生成的 UUID';
COMMENT ON COLUMN ${schema}.sub_video_tasks.task_id IS '所属渲染任务；任务删除时子任务一并删除';
COMMENT ON COLUMN ${schema}.sub_video_tasks.sequence_no IS '片段序号，从 0 开始，同一任务内唯一，决定拼接顺序';
COMMENT ON COLUMN ${schema}.sub_video_tasks.status IS '子任务状态：待处理、已入队、执行中、成功、失败、已取消';
COMMENT ON COLUMN ${schema}.sub_video_tasks.narration_text IS '本段旁白文本';
COMMENT ON COLUMN ${schema}.sub_video_tasks.visual_prompt IS '画面生成提示词';
COMMENT ON COLUMN ${schema}.sub_video_tasks.source_media_id IS '本段采用的素材；素材删除后置空';
COMMENT ON COLUMN ${schema}.sub_video_tasks.output_media_id IS '渲染出的视频片段；未完成时为空';
COMMENT ON COLUMN ${schema}.sub_video_tasks.duration_ms IS '片段时长，单位毫秒';
COMMENT ON COLUMN ${schema}.sub_video_tasks.render_params IS '渲染参数，如转场、字幕位置、镜头运动';
COMMENT ON COLUMN ${schema}.sub_video_tasks.result IS '渲染产出信息，未完成时为空';
COMMENT ON COLUMN ${schema}.sub_video_tasks.attempt_count IS '已尝试执行的次数，含重试';
COMMENT ON COLUMN ${schema}.sub_video_tasks.error_message IS '最近一次失败的错误信息';
COMMENT ON COLUMN ${schema}.sub_video_tasks.started_at IS '开始执行时间';
COMMENT ON COLUMN ${schema}.sub_video_tasks.finished_at IS '结束时间';
COMMENT ON COLUMN ${schema}.sub_video_tasks.created_at IS '创建时间';
COMMENT ON COLUMN ${schema}.sub_video_tasks.updated_at IS '最后修改时间，由触发器在每次 UPDATE 时刷新';
