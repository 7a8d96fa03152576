-- sqlite/0008_disabled_devices.sql indexes the disabled devices for the SQLite
-- verification engine, which reads a matched passcode's device flag on its own. PostgreSQL
-- reads the flag through the join of RECENT_PASSCODES (server/src/db/verify.rs) and needs
-- no such index; this file keeps the two folders' numbering in step.
SELECT 1;
