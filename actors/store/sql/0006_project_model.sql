-- Per-project Realtime model (engine/projects.py Project.model); NULL: the engine's
-- OPENAI_REALTIME_MODEL. Validated by the engine (a model with built-in prices).
ALTER TABLE projects ADD COLUMN model text;

-- Languages are ISO 639-1 from now on, as the Realtime API documents: tags accepted
-- before (en-US) become their language (en), as the engine now stores them.
UPDATE projects SET language = lower(substring(language FROM 1 FOR 2))
    WHERE language ~ '^[A-Za-z]{2}-';
