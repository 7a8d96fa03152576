-- sqlite/0011_passcode_ids.sql gives SQLite's passcodes AUTOINCREMENT, so that the SQLite
-- verification engine's copy of the live passcodes misses no new row. PostgreSQL's ids
-- come from a sequence, which never hands an id out twice, and each check reads the
-- passcodes through the pool; nothing changes here. This file keeps the two folders'
-- numbering in step.
SELECT 1;
