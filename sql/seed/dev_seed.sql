-- Development data: three personas, four prompt templates and one demo project with its
-- tasks, media, analyses, script and sub-video tasks. Every row has a fixed id and every
-- INSERT ends in ON CONFLICT DO NOTHING, so running the file again adds nothing.
-- Parents come before children, in the order of models.TABLE_NAMES.

INSERT INTO ${schema}.personas (id, name, display_name, description, voice_id, style, language)
VALUES
    ('a1000000-0000-4000-8000-000000000001', 'news_anchor', '新闻主播',
     '语气沉稳客观，适合资讯类、政策解读类视频。', 'zh_male_news_01',
     '{"tone": "沉稳", "speech_rate": 1.0, "catchphrases": []}', 'zh-CN'),
    ('a1000000-0000-4000-8000-000000000002', 'lifestyle_vlogger', '生活博主',
     '口语化、有亲和力，适合探店、旅行、日常记录。', 'zh_female_vlog_02',
     '{"tone": "轻松", "speech_rate": 1.1, "catchphrases": ["家人们", "真的绝了"]}', 'zh-CN'),
    ('a1000000-0000-4000-8000-000000000003', 'science_explainer', '科普讲解员',
     '先抛问题再讲原理，多用类比，适合知识科普。', 'zh_male_edu_01',
     '{"tone": "耐心", "speech_rate": 0.95, "catchphrases": ["你可能不知道"]}', 'zh-CN')
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.prompt_templates
    (id, name, version, purpose, template_text, variables, model_params, is_active)
VALUES
    ('a2000000-0000-4000-8000-000000000001', 'script_default', 1, 'script',
     E'请把下面的文字改写成一段短视频口播稿，时长约 {{duration_s}} 秒：\n{{source_text}}',
     '["duration_s", "source_text"]', '{"model": "qwen-max", "temperature": 0.7}', false),
    ('a2000000-0000-4000-8000-000000000002', 'script_default', 2, 'script',
     E'你是{{persona_name}}。请把下面的文字改写成一段短视频口播稿，时长约 {{duration_s}} 秒，开头三秒要抓人，结尾引导关注：\n{{source_text}}',
     '["persona_name", "duration_s", "source_text"]',
     '{"model": "qwen-max", "temperature": 0.8, "max_tokens": 1200}', true),
    ('a2000000-0000-4000-8000-000000000003', 'storyboard_split', 1, 'storyboard',
     E'把下面的口播稿拆成分镜，每个分镜给出旁白、画面描述和建议时长（秒），输出 JSON 数组：\n{{script}}',
     '["script"]', '{"model": "qwen-max", "temperature": 0.3, "response_format": "json"}', true),
    ('a2000000-0000-4000-8000-000000000004', 'material_tagging', 1, 'material_analysis',
     '描述这张图片或这段视频的内容，给出不超过 10 个中文标签。',
     '[]', '{"model": "qwen-vl-max", "temperature": 0.2}', true)
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.video_projects
    (id, owner_id, title, source_text, language, status, default_persona_id, settings, target_duration_ms)
VALUES
    ('b0000000-0000-4000-8000-000000000001', 'b9000000-0000-4000-8000-000000000001',
     '西湖春日漫步',
     '三月的西湖，苏堤上的柳树刚抽出新芽。清晨七点，游客还不多，湖面上起了一层薄雾，'
     '远处的保俶塔若隐若现。沿着苏堤慢慢走，一边是西里湖，一边是外西湖，'
     '走到尽头正好赶上断桥边的早市，买一份葱包桧，这一天就算开了个好头。',
     'zh-CN', 'processing', 'a1000000-0000-4000-8000-000000000002',
     '{"resolution": "1080x1920", "aspect_ratio": "9:16", "bgm": "light_piano_01",
       "subtitle": {"font": "思源黑体", "position": "bottom"}}',
     45000)
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.tasks
    (id, project_id, kind, status, priority, progress, payload, result, attempt_count, worker_id,
     started_at, finished_at)
VALUES
    ('c0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001',
     'script_generation', 'succeeded', 0, 100,
     '{"prompt_template": "script_default", "prompt_version": 2, "duration_s": 45}',
     '{"script_id": "f0000000-0000-4000-8000-000000000001", "tokens": 864}',
     1, 'worker-llm-01', '2025-03-20 10:00:00+08', '2025-03-20 10:00:18+08'),
    ('c0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-000000000001',
     'material_analysis', 'succeeded', 0, 100,
     '{"media_ids": ["d0000000-0000-4000-8000-000000000001", "d0000000-0000-4000-8000-000000000002"]}',
     '{"analyzed": 2}',
     1, 'worker-vision-02', '2025-03-20 10:01:00+08', '2025-03-20 10:01:42+08'),
    ('c0000000-0000-4000-8000-000000000003', 'b0000000-0000-4000-8000-000000000001',
     'video_render', 'running', 5, 33.33,
     '{"script_id": "f0000000-0000-4000-8000-000000000001", "segments": 3}',
     NULL,
     1, 'worker-render-03', '2025-03-20 10:05:00+08', NULL)
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.media_items
    (id, project_id, kind, source, status, storage_key, original_filename, mime_type,
     file_size_bytes, duration_ms, width, height, checksum_sha256, properties)
VALUES
    ('d0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001',
     'image', 'upload', 'ready', 'projects/b0000000/uploads/duanqiao.jpg', '断桥晨雾.jpg', 'image/jpeg',
     2483712, NULL, 4032, 3024,
     '3f9a1c0d2b7e4a65b1c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4',
     '{"exif": {"camera": "iPhone 15 Pro", "taken_at": "2025-03-16T07:12:05+08:00"}}'),
    ('d0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-000000000001',
     'video', 'upload', 'ready', 'projects/b0000000/uploads/sudi.mp4', '苏堤柳树.mp4', 'video/mp4',
     58720256, 12000, 1920, 1080,
     '8e2d4f6a0b1c3d5e7f9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60',
     '{"codec": "h264", "fps": 30, "bitrate_kbps": 38000}'),
    ('d0000000-0000-4000-8000-000000000003', 'b0000000-0000-4000-8000-000000000001',
     'video', 'generated', 'ready', 'projects/b0000000/renders/segment_000.mp4', NULL, 'video/mp4',
     6291456, 14000, 1080, 1920, NULL,
     '{"codec": "h264", "fps": 30, "rendered_by": "worker-render-03"}')
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.material_analyses
    (id, media_item_id, task_id, analyzer, analyzer_version, status, summary, result, confidence)
VALUES
    ('e0000000-0000-4000-8000-000000000001', 'd0000000-0000-4000-8000-000000000001',
     'c0000000-0000-4000-8000-000000000002', 'qwen-vl-max', '2025-01', 'succeeded',
     '清晨薄雾中的断桥，湖面平静，远处可见保俶塔。',
     '{"labels": ["西湖", "断桥", "晨雾", "保俶塔", "湖面"], "scene": "户外", "time_of_day": "清晨"}',
     0.934),
    ('e0000000-0000-4000-8000-000000000002', 'd0000000-0000-4000-8000-000000000002',
     'c0000000-0000-4000-8000-000000000002', 'qwen-vl-max', '2025-01', 'succeeded',
     '苏堤上随风摆动的柳枝，镜头缓慢向前推进，有少量游客。',
     '{"labels": ["西湖", "苏堤", "柳树", "游客", "春天"], "scene": "户外", "camera_motion": "推镜"}',
     0.887)
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.script_contents
    (id, project_id, version, persona_id, prompt_template_id, task_id, status, title, body, scenes,
     word_count, estimated_duration_ms)
VALUES
    ('f0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001', 1,
     'a1000000-0000-4000-8000-000000000002', 'a2000000-0000-4000-8000-000000000002',
     'c0000000-0000-4000-8000-000000000001', 'approved', '早上七点的西湖，才是杭州人的西湖',
     '家人们，早上七点的西湖你见过吗？湖面起了一层薄雾，断桥安安静静的，保俶塔在远处若隐若现。'
     '沿着苏堤慢慢走，柳树刚冒新芽，风一吹真的绝了。走到头正好赶上早市，来一份葱包桧，'
     '这一天就稳了。关注我，带你看不一样的杭州。',
     '[{"narration": "家人们，早上七点的西湖你见过吗？湖面起了一层薄雾，断桥安安静静的，保俶塔在远处若隐若现。",
        "visual": "断桥晨雾全景，镜头缓慢平移", "duration_s": 14},
       {"narration": "沿着苏堤慢慢走，柳树刚冒新芽，风一吹真的绝了。",
        "visual": "苏堤柳枝特写，推镜", "duration_s": 12},
       {"narration": "走到头正好赶上早市，来一份葱包桧，这一天就稳了。关注我，带你看不一样的杭州。",
        "visual": "早市烟火气，葱包桧出锅特写", "duration_s": 16}]',
     105, 42000)
ON CONFLICT DO NOTHING;

INSERT INTO ${schema}.sub_video_tasks
    (id, task_id, sequence_no, status, narration_text, visual_prompt, source_media_id,
     output_media_id, duration_ms, render_params, attempt_count, started_at, finished_at)
VALUES
    ('5b000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000003', 0, 'succeeded',
     '家人们，早上七点的西湖你见过吗？湖面起了一层薄雾，断桥安安静静的，保俶塔在远处若隐若现。',
     '断桥晨雾全景，镜头缓慢平移', 'd0000000-0000-4000-8000-000000000001',
     'd0000000-0000-4000-8000-000000000003', 14000,
     '{"transition": "fade", "subtitle_position": "bottom", "camera": "pan_right"}',
     1, '2025-03-20 10:05:02+08', '2025-03-20 10:06:10+08'),
    ('5b000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000003', 1, 'running',
     '沿着苏堤慢慢走，柳树刚冒新芽，风一吹真的绝了。',
     '苏堤柳枝特写，推镜', 'd0000000-0000-4000-8000-000000000002',
     NULL, 12000,
     '{"transition": "dissolve", "subtitle_position": "bottom", "camera": "push_in"}',
     1, '2025-03-20 10:06:11+08', NULL),
    ('5b000000-0000-4000-8000-000000000003', 'c0000000-0000-4000-8000-000000000003', 2, 'pending',
     '走到头正好赶上早市，来一份葱包桧，这一天就稳了。关注我，带你看不一样的杭州。',
     '早市烟火气，葱包桧出锅特写', NULL,
     NULL, 16000,
     '{"transition": "cut", "subtitle_position": "bottom", "camera": "static"}',
     0, NULL, NULL)
ON CONFLICT DO NOTHING;
