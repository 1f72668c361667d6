-- The routing snapshot (actors/routing.py): every engine instance answers calls from an
-- in-memory copy of projects, phone numbers and API keys, so that call setup needs no
-- database round trip. Any change to those tables bumps one version number and
-- notifies 'afterhours_routing' (delivered at commit); instances reload on the
-- notification, and check the version every second in case one was missed.
CREATE TABLE routing_version (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    version  bigint  NOT NULL
);
INSERT INTO routing_version (id, version) VALUES (true, 1);

CREATE FUNCTION bump_routing_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bumped bigint;
BEGIN
    UPDATE routing_version SET version = version + 1 RETURNING version INTO bumped;
    PERFORM pg_notify('afterhours_routing', bumped::text);
    RETURN NULL;
END
$$;

-- Statement-level: one bump per statement, whatever the number of rows (COPY included).
CREATE TRIGGER projects_routing_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
CREATE TRIGGER phone_numbers_routing_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON phone_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
CREATE TRIGGER api_keys_routing_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
