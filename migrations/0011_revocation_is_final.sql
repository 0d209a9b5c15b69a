-- A revoked key stays revoked. The API role may update revoked_at (it revokes keys), and column privileges cannot
-- tell revoking from un-revoking, so a trigger refuses the second, for every role: a key that has to work again
-- is a new key. Revoking again is fine (the service writes COALESCE(revoked_at, now()), the same value).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

CREATE FUNCTION refuse_unrevoking_a_key() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'key % was revoked at %; a revoked key cannot be restored: issue a new one', OLD.id, OLD.revoked_at
            USING ERRCODE = 'check_violation';
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER device_api_keys_revocation_is_final
    BEFORE UPDATE OF revoked_at ON device_api_keys
    FOR EACH ROW
    EXECUTE FUNCTION refuse_unrevoking_a_key();

CREATE TRIGGER membership_api_keys_revocation_is_final
    BEFORE UPDATE OF revoked_at ON membership_api_keys
    FOR EACH ROW
    EXECUTE FUNCTION refuse_unrevoking_a_key();
