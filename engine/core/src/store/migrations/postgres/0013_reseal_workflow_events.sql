-- Key rotation for the workflow's event logs (postgres). `huizhen keys rotate` re-seals every
-- sealed value with the active data key so that an old key can be retired; the events of
-- consultations and prescriptions are sealed too, and their tables are append-only. The
-- trigger functions now let exactly one kind of UPDATE through: one that changes nothing but
-- the sealed column, to another sealed value (`hze:…`). Every other UPDATE, and every DELETE,
-- is still refused. (Opening the new value needs the key ring, so a value written by anything
-- else than the rotation fails to open: it cannot pass for an event.)

CREATE OR REPLACE FUNCTION consultation_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.seq, NEW.consultation_id, NEW.version, NEW.kind, NEW.state, NEW.actor,
            NEW.role, NEW.at, NEW.plugin_name, NEW.plugin_version)
           IS NOT DISTINCT FROM
           (OLD.seq, OLD.consultation_id, OLD.version, OLD.kind, OLD.state, OLD.actor,
            OLD.role, OLD.at, OLD.plugin_name, OLD.plugin_version)
       AND left(NEW.event, 4) = 'hze:' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'consultation_events is append-only (key rotation may only re-seal `event`)';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION prescription_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.prescription_id, NEW.version, NEW.kind, NEW.actor, NEW.at)
           IS NOT DISTINCT FROM
           (OLD.prescription_id, OLD.version, OLD.kind, OLD.actor, OLD.at)
       AND left(NEW.body, 4) = 'hze:' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'prescription_events is append-only (key rotation may only re-seal `body`)';
END;
$$ LANGUAGE plpgsql;
