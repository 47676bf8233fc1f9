-- Plugin shadow mode (issue 22): the facilities for which a pipeline step's shadow plugin
-- version was promoted to decide (its primary then runs as the shadow). A rollback deletes the
-- row. Kept across restarts and reloads; each change is audited by the API.
CREATE TABLE shadow_promotions (
    pipeline TEXT NOT NULL,
    plugin TEXT NOT NULL,
    facility TEXT NOT NULL,
    promoted_at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (pipeline, plugin, facility)
);
