-- The product's EventLog: alerts and notable engine and call events, one row each.
-- event id is chosen by the engine (uuid) so that a retried batch is idempotent.
CREATE TABLE event_log (
    id          uuid        PRIMARY KEY,
    ts          timestamptz NOT NULL,
    level       text        NOT NULL CHECK (level IN ('info', 'warning', 'error', 'critical')),
    type        text        NOT NULL,
    project_id  text,
    call_sid    text,
    message     text        NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX event_log_project_ts ON event_log (project_id, ts DESC);
CREATE INDEX event_log_ts ON event_log (ts DESC);
