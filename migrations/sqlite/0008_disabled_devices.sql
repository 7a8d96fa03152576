-- The disabled devices alone, for the verification engine's device check
-- (ENGINE_DEVICE_DISABLED in server/src/db/verify.rs). Reading a matched passcode's device
-- row took a B-tree page of its own per Accept, one outside the CPU's caches with many
-- users; this index holds only the few disabled devices, so it stays a page or two, always
-- cached, whatever the number of devices (BENCHMARKS.md).
CREATE INDEX devices_disabled ON devices (id) WHERE disabled != 0;
