-- Who stopped a call recording and why (issue 18, RTC-30): a participant through the `record`
-- message, an API user (`POST /api/consultations/{id}/recording`), or the engine (everyone
-- left, a newcomer without recording consent, the track ended). Rows written before this
-- migration have empty values.
ALTER TABLE recordings ADD COLUMN stopped_by TEXT NOT NULL DEFAULT '';
ALTER TABLE recordings ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';
