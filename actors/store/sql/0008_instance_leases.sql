-- Each engine process holds a lease: a heartbeat row it renews every few seconds
-- (actors/store/leases.py). A call left 'active' by a process whose lease expired (killed,
-- its host gone) is finalised 'failed' with end_reason 'engine_lost' by whichever engine
-- sweeps next, so no row stays live forever. All times here are the database's clock:
-- the engines' clocks need not agree.
CREATE TABLE instance_leases (
    instance_id   text        PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    -- Set by a clean stop (the lease is given up at once rather than left to expire).
    stopped_at    timestamptz
);
CREATE INDEX instance_leases_expires ON instance_leases (expires_at);

-- The sweep looks up the live calls of expired instances: only 'active' rows matter.
CREATE INDEX calls_active_instance ON calls (engine_instance) WHERE status = 'active';
