-- The analytics split by system (bySystem, per day too) groups a window's calls by
-- coalesce(system, 'openai'): with system in the covering index of migration 0003 those
-- reads stay index-only scans, as the totals are (docs/performance.md).
CREATE INDEX calls_project_started_cover_system ON calls (project_id, started_at, call_sid)
    INCLUDE (status, intent, duration_s, cost_usd, time_to_first_audio_ms, system);
DROP INDEX calls_project_started_cover;
ALTER INDEX calls_project_started_cover_system RENAME TO calls_project_started_cover;
