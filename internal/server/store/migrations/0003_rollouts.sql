-- 0003 groups and rollouts (SPEC §7). Owned by the rollout-engine engineer.
-- Times are BIGINT unix milliseconds; JSON is TEXT; flags are BIGINT 0/1.

-- Static groups of device names.
CREATE TABLE device_groups (
    name TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES device_groups (name) ON DELETE CASCADE,
    device_name TEXT NOT NULL,
    PRIMARY KEY (group_name, device_name)
);
CREATE INDEX group_members_device ON group_members (device_name);

-- One row per rollout. waves holds the per-wave plan and device counters
-- (JSON) so that a report updates one row, whatever the fleet size; the row
-- is what replicas lock (FOR UPDATE) while they apply a report.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    artifact_name TEXT NOT NULL,
    artifact_version TEXT NOT NULL,
    group_name TEXT NOT NULL,
    probe TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    current_wave BIGINT NOT NULL,
    waves TEXT NOT NULL,
    failures BIGINT NOT NULL,
    acknowledged BIGINT NOT NULL,
    abort_policy TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state, id);
CREATE INDEX rollouts_created ON rollouts (created_at, id);

-- The stored partition and each device's progress. held = 1 marks the row
-- that decides what the device is served (at most one per device: the
-- partial unique index enforces one rollout per device across replicas).
-- done = 1 when the state is terminal (cheap wave-completion checks).
CREATE TABLE rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    position BIGINT NOT NULL,
    wave BIGINT NOT NULL,
    state TEXT NOT NULL,
    done BIGINT NOT NULL,
    held BIGINT NOT NULL,
    detail TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    action TEXT NOT NULL,
    previous_version TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device)
);
CREATE UNIQUE INDEX rollout_devices_held ON rollout_devices (device) WHERE held = 1;
CREATE INDEX rollout_devices_wave ON rollout_devices (rollout_id, wave, done);
CREATE INDEX rollout_devices_position ON rollout_devices (rollout_id, position);
CREATE INDEX rollout_devices_assignment ON rollout_devices (assignment_id);

-- Bumped by every change that alters what heartbeats are served at the
-- rollout level (create, wave reached, halt, abort, …): replicas poll it to
-- drop their in-memory assignment caches.
CREATE TABLE rollout_epoch (
    id BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL
);
INSERT INTO rollout_epoch (id, epoch) VALUES (1, 0);
