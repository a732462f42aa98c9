-- Who created an event: the subject of the organizer token that did. An
-- event seeded by `flashtix reset` has none, and any organizer may read it.
ALTER TABLE events ADD COLUMN organizer TEXT;
