-- Per-project server VAD settings (engine/projects.py): when the caller's speech starts
-- and ends. Defaults are OpenAI's.
ALTER TABLE projects
    ADD COLUMN vad_threshold double precision NOT NULL DEFAULT 0.5,
    ADD COLUMN vad_silence_ms integer NOT NULL DEFAULT 500,
    ADD COLUMN vad_prefix_padding_ms integer NOT NULL DEFAULT 300;
