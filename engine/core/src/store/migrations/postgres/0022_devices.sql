-- Device → patient bindings (issue 25): which patient record (a local id in the facility's
-- namespace, resolved to the person through the identity index) a device measured for, and
-- when. Times in milliseconds since the epoch (UTC); valid_to is exclusive, NULL while the
-- device is still lent. A device's periods do not overlap (checked when a binding is added).
CREATE TABLE device_bindings (
    id          TEXT PRIMARY KEY NOT NULL,
    facility    TEXT NOT NULL,
    device      TEXT NOT NULL,
    local_id    TEXT NOT NULL,
    valid_from  BIGINT NOT NULL,
    valid_to    BIGINT,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX device_bindings_device ON device_bindings (facility, device, valid_from);
