-- The analytics reads (actors/store/analytics.py) aggregate one project's calls over a
-- time range and page through them newest first. This index serves both: the range by
-- (project_id, started_at), the keyset order by call_sid after it, and the aggregated
-- columns from the index itself (index-only scans), so a month of a busy project reads
-- the index, not thousands of scattered heap pages (bench/analytics.py: the plans).
CREATE INDEX calls_project_started_cover ON calls (project_id, started_at, call_sid)
    INCLUDE (status, intent, duration_s, cost_usd, time_to_first_audio_ms);
DROP INDEX calls_project_started;
