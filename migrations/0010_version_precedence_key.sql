-- /firmware-versions is paged by SemVer precedence, with the database doing the ordering: each version gets a
-- byte string (precedence_key) whose byte order is SemVer 2.0.0 precedence (semver.org, item 11), ties broken
-- by the version's text, the order SemanticVersionPrecedence gives (a test checks the two agree).
--   * major, minor, patch: the digit count as one byte, then the digits (no leading zeros, so longer is larger);
--   * then 0x02 for a release, or 0x01 for a pre-release followed by its identifiers, each numeric one as
--     0x01, digit count, digits, each other one as 0x02, its characters, 0x00; and 0x00 after the last
--     (fewer identifiers sort first);
--   * then the whole version text (the encoding above is prefix-free, so this only breaks ties).
-- Versions are at most 128 ASCII characters (checked on the way in), so every count fits in a byte.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '10min';

CREATE FUNCTION firmware_precedence_key(version text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    without_build text := split_part(version, '+', 1);
    dash integer := position('-' IN without_build);
    core text := CASE WHEN dash > 0 THEN left(without_build, dash - 1) ELSE without_build END;
    key bytea := ''::bytea;
    part text;
BEGIN
    FOREACH part IN ARRAY string_to_array(core, '.') LOOP
        key := key || set_byte('\x00'::bytea, 0, length(part)) || convert_to(part, 'UTF8');
    END LOOP;

    IF dash = 0 THEN
        key := key || '\x02'::bytea;
    ELSE
        key := key || '\x01'::bytea;
        FOREACH part IN ARRAY string_to_array(substr(without_build, dash + 1), '.') LOOP
            IF part ~ '^[0-9]+$' THEN
                key := key || '\x01'::bytea || set_byte('\x00'::bytea, 0, length(part)) || convert_to(part, 'UTF8');
            ELSE
                key := key || '\x02'::bytea || convert_to(part, 'UTF8') || '\x00'::bytea;
            END IF;
        END LOOP;
        key := key || '\x00'::bytea;
    END IF;

    RETURN key || convert_to(version, 'UTF8');
END
$$;

-- A stored generated column: computed once per row as ingest inserts it, never by a reader. The table has a
-- row per version and stripe of each project (thousands, not millions), so the rewrite this ALTER makes is short.
ALTER TABLE firmware_version_counts
    -- squawk-ignore adding-field-with-default
    ADD COLUMN precedence_key bytea GENERATED ALWAYS AS (firmware_precedence_key(firmware)) STORED;

-- The page query reads one project's versions in key order from here. Built in this script's transaction (not
-- CONCURRENTLY, which a transaction cannot run) for the same reason: the table is small.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX firmware_version_counts_precedence_idx
    ON firmware_version_counts (project_id, precedence_key);
