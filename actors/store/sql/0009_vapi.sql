-- Two systems answer a project's numbers: this engine (OpenAI Realtime) and Vapi
-- (engine/vapi_codec.py). A number on Vapi needs Vapi's id for it (the request that
-- creates the call names it) and may name an assistant; a project says who answers its
-- callers when Vapi does not take a call in time: this engine, or its on-call number.
ALTER TABLE phone_numbers
    ADD COLUMN vapi_phone_number_id text CHECK (length(vapi_phone_number_id) <= 64),
    ADD COLUMN vapi_assistant_id    text CHECK (length(vapi_assistant_id) <= 64),
    ADD COLUMN updated_at           timestamptz NOT NULL DEFAULT now();

ALTER TABLE projects
    ADD COLUMN vapi_fallback text NOT NULL DEFAULT 'engine'
        CHECK (vapi_fallback IN ('engine', 'on_call'));

-- Which system answered the call (NULL: not known yet: a status callback can create the
-- row before the webhook's record lands; read as 'openai', the only system before this),
-- Vapi's own call id, and the summary Vapi's end-of-call report may carry. Vapi's report
-- is a third source of a call's outcome, ranked like the engine's own word (writes.py).
ALTER TABLE calls
    ADD COLUMN system       text CHECK (system IN ('openai', 'vapi')),
    ADD COLUMN vapi_call_id text,
    ADD COLUMN summary      text;
ALTER TABLE calls DROP CONSTRAINT calls_status_source_check;
ALTER TABLE calls ADD CONSTRAINT calls_status_source_check
    CHECK (status_source IN ('engine', 'twilio', 'vapi'));
CREATE INDEX calls_vapi_call_id ON calls (vapi_call_id) WHERE vapi_call_id IS NOT NULL;
CREATE INDEX calls_project_system_started ON calls (project_id, system, started_at DESC);
