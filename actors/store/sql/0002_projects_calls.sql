-- Projects (the businesses one engine serves), their phone numbers, their calls, the
-- functions the model called during calls, and per-project read keys.

CREATE TABLE projects (
    id                  text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name                text        NOT NULL,
    timezone            text        NOT NULL,
    greeting            text        NOT NULL DEFAULT '',
    instructions        text        NOT NULL DEFAULT '',
    voice               text        NOT NULL DEFAULT 'marin',
    language            text        NOT NULL DEFAULT 'en',
    tools               jsonb       NOT NULL DEFAULT '[]'::jsonb,
    function_url        text,
    function_secret     text,
    function_timeout_s  double precision NOT NULL DEFAULT 5 CHECK (function_timeout_s > 0),
    on_call_number      text,
    max_call_s          integer     NOT NULL DEFAULT 900 CHECK (max_call_s > 0),
    silence_timeout_s   integer     NOT NULL DEFAULT 30 CHECK (silence_timeout_s > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE phone_numbers (
    number      text        PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    project_id  text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    system      text        NOT NULL CHECK (system IN ('openai', 'vapi')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX phone_numbers_project ON phone_numbers (project_id);

-- project_id is nullable and not a foreign key: a call row may be created by a status
-- callback or a stream end that reaches an instance before the call's own start record
-- does, and a deleted project must not erase its call history.
CREATE TABLE calls (
    call_sid                text        PRIMARY KEY,
    project_id              text,
    from_number             text,
    to_number               text,
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'completed', 'missed', 'failed')),
    status_source           text        NOT NULL DEFAULT 'engine'
                                        CHECK (status_source IN ('engine', 'twilio')),
    -- Precedence of the status and its source, kept by the store's merge (writes.py).
    status_rank             smallint    NOT NULL DEFAULT 0,
    intent                  text        NOT NULL DEFAULT 'unknown'
                                        CHECK (intent IN ('emergency', 'routine', 'unknown')),
    end_reason              text,
    error                   text,
    started_at              timestamptz,
    answered_at             timestamptz,
    ended_at                timestamptz,
    duration_s              double precision,
    -- NULL until the bridge reports them, so a late update can tell "not known" from
    -- "known to be empty".
    transcript              jsonb,
    usage                   jsonb,
    cost_usd                numeric(12, 6),
    time_to_first_audio_ms  integer,
    stream_sid              text,
    engine_instance         text,
    twilio_status           text,
    twilio_duration_s       integer,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_project_started ON calls (project_id, started_at DESC);
CREATE INDEX calls_project_status ON calls (project_id, status);

CREATE TABLE function_calls (
    id          uuid        PRIMARY KEY,
    call_sid    text        NOT NULL,
    project_id  text,
    name        text        NOT NULL,
    arguments   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    outcome     text        NOT NULL CHECK (outcome IN ('ok', 'error', 'timeout')),
    http_status integer,
    latency_ms  integer     NOT NULL,
    error       text,
    at          timestamptz NOT NULL
);
CREATE INDEX function_calls_call ON function_calls (call_sid);
CREATE INDEX function_calls_project_at ON function_calls (project_id, at DESC);

CREATE TABLE api_keys (
    id          text        PRIMARY KEY,
    project_id  text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text        NOT NULL DEFAULT '',
    key_hash    text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id);
