-- Key rotation for the workflow's event logs (sqlite). `huizhen keys rotate` re-seals every
-- sealed value with the active data key so that an old key can be retired; the events of
-- consultations and prescriptions are sealed too, and their tables are append-only. The
-- update triggers now let exactly one kind of UPDATE through: one that changes nothing but the
-- sealed column, to another sealed value (`hze:…`). Every other UPDATE, and every DELETE, is
-- still refused. (Opening the new value needs the key ring, so a value written by anything
-- else than the rotation fails to open: it cannot pass for an event.)

DROP TRIGGER consultation_events_no_update;
CREATE TRIGGER consultation_events_no_update BEFORE UPDATE ON consultation_events
WHEN NEW.seq IS NOT OLD.seq
  OR NEW.consultation_id IS NOT OLD.consultation_id
  OR NEW.version IS NOT OLD.version
  OR NEW.kind IS NOT OLD.kind
  OR NEW.state IS NOT OLD.state
  OR NEW.actor IS NOT OLD.actor
  OR NEW.role IS NOT OLD.role
  OR NEW.at IS NOT OLD.at
  OR NEW.plugin_name IS NOT OLD.plugin_name
  OR NEW.plugin_version IS NOT OLD.plugin_version
  OR substr(NEW.event, 1, 4) <> 'hze:'
BEGIN SELECT RAISE(ABORT, 'consultation_events is append-only (key rotation may only re-seal `event`)'); END;

DROP TRIGGER prescription_events_no_update;
CREATE TRIGGER prescription_events_no_update BEFORE UPDATE ON prescription_events
WHEN NEW.prescription_id IS NOT OLD.prescription_id
  OR NEW.version IS NOT OLD.version
  OR NEW.kind IS NOT OLD.kind
  OR NEW.actor IS NOT OLD.actor
  OR NEW.at IS NOT OLD.at
  OR substr(NEW.body, 1, 4) <> 'hze:'
BEGIN SELECT RAISE(ABORT, 'prescription_events is append-only (key rotation may only re-seal `body`)'); END;
